//! Integration tests of the core through its public API: store outages and builder errors.

mod builder;
mod outage;
