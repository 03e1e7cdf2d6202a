//! Integration tests of the `fleetcron` binary: schedule previews, the multi-process exactly-once test
//! and the demo. One test binary; each concern is a module.

mod common;
mod demo;
mod multiprocess;
mod schedule;
