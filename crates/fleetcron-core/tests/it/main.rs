//! Integration tests of the core through its public API: store outages, builder errors, and a
//! worker's health (fatal loops, skewed clocks, a store slower than the load).

mod builder;
mod health;
mod observability;
mod outage;
