//! Integration tests of the `fleetcron` binary: schedule previews, the multi-process exactly-once test,
//! the demo, the daemon's configuration check, command and HTTP tasks, admin commands, SIGHUP reload and
//! a three-daemon fleet, what an operator installs (completions, man pages, the systemd unit, sd_notify).
//! One test binary; each concern is a module.

mod admin;
mod admin_http;
mod common;
mod config_check;
mod daemon_support;
mod daemon_tasks;
mod demo;
mod disk_full;
mod fleet;
mod install;
mod multiprocess;
mod no_secret_leaks;
mod schedule;
mod task_secrets;
mod torture;
