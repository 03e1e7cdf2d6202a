//! Process figures from `/proc` (the workspace forbids `unsafe`, so no `getrusage`): resident memory from
//! `/proc/self/status`, CPU time (user + system) from `/proc/self/stat` and `/proc/self/task/TID/stat`.
//! CPU time comes in clock ticks (`getconf CLK_TCK`, 100 on Linux), so its resolution is 10 ms.

use crate::Error;
use std::sync::OnceLock;
use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times.
pub fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|ticks| *ticks > 0)
            .unwrap_or(100)
    })
}

/// User + system CPU ticks from the text of a `/proc/.../stat` file.
pub fn parse_stat_ticks(text: &str) -> Result<u64, Error> {
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let after = text
        .rfind(')')
        .and_then(|end| text.get(end + 1..))
        .ok_or("malformed stat line: no ')'")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')' the first field is field 3 (state); utime is field 14, stime field 15.
    let field = |number: usize| -> Result<u64, Error> {
        let text = fields
            .get(number - 3)
            .ok_or_else(|| format!("malformed stat line: no field {number}"))?;
        text.parse::<u64>()
            .map_err(|error| format!("malformed stat field {number} {text:?}: {error}").into())
    };
    Ok(field(14)? + field(15)?)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let per_second = clock_ticks_per_second();
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_second)
}

/// CPU time (user + system) used by this process so far, every thread included.
pub fn process_cpu() -> Result<Duration, Error> {
    let text =
        std::fs::read_to_string("/proc/self/stat").map_err(|error| format!("cannot read /proc/self/stat: {error}"))?;
    Ok(ticks_to_duration(parse_stat_ticks(&text)?))
}

/// CPU time (user + system) used so far by thread `tid` of this process.
pub fn thread_cpu(tid: u32) -> Result<Duration, Error> {
    let path = format!("/proc/self/task/{tid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|error| format!("cannot read {path}: {error}"))?;
    Ok(ticks_to_duration(parse_stat_ticks(&text)?))
}

/// The calling thread's id (from the `/proc/thread-self` link, `PID/task/TID`).
pub fn current_tid() -> Result<u32, Error> {
    let link =
        std::fs::read_link("/proc/thread-self").map_err(|error| format!("cannot read /proc/thread-self: {error}"))?;
    let text = link.to_string_lossy();
    text.rsplit('/')
        .next()
        .and_then(|tid| tid.parse::<u32>().ok())
        .ok_or_else(|| format!("unexpected /proc/thread-self target {text:?}").into())
}

/// `VmRSS` in bytes from the text of `/proc/self/status`.
pub fn parse_vm_rss(text: &str) -> Result<u64, Error> {
    let line = text
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .ok_or("no VmRSS line in /proc/self/status")?;
    let mut parts = line.trim_start_matches("VmRSS:").split_whitespace();
    let value: u64 = parts
        .next()
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| format!("malformed VmRSS line {line:?}"))?;
    match parts.next() {
        Some("kB") => Ok(value * 1024),
        other => Err(format!("unexpected VmRSS unit {other:?}").into()),
    }
}

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> Result<u64, Error> {
    let text = std::fs::read_to_string("/proc/self/status")
        .map_err(|error| format!("cannot read /proc/self/status: {error}"))?;
    parse_vm_rss(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_utime_plus_stime_even_with_spaces_in_the_name() {
        let line = "1234 (tokio runtime) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 6 0 100 1000 50";
        assert_eq!(parse_stat_ticks(line).expect("parse"), 287);
        assert!(parse_stat_ticks("garbage").is_err());
        assert!(parse_stat_ticks("1 (x) S 1 2").is_err());
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tbench\nVmPeak:\t  9000 kB\nVmRSS:\t  4321 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status).expect("parse"), 4321 * 1024);
        assert!(parse_vm_rss("Name:\tx\n").is_err());
    }

    #[test]
    fn this_process_can_be_measured() {
        assert!(rss_bytes().expect("rss") > 0);
        assert!(process_cpu().is_ok());
        let tid = current_tid().expect("tid");
        assert!(thread_cpu(tid).is_ok());
    }
}
