//! The fleet: one seat per worker position, each running one incarnation of `fleetcron worker` at a
//! time (with its output in `w<seat>.<incarnation>.{out,err}` of the run's directory). Starting,
//! SIGKILLing, SIGSTOP/SIGCONT, noticing workers that exited by themselves, and stopping them all.

use super::faults::Rng;
use crate::process::{say, signal, warn};
use crate::CliError;
use fleetcron_faultproxy::FaultProxy;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// One worker position in the fleet, whatever incarnation runs in it.
pub(super) struct Seat {
    index: u32,
    incarnation: u32,
    child: Option<Child>,
    url: String,
    /// The proxy between this seat's workers and a server store, when connections are cut.
    pub(super) proxy: Option<FaultProxy>,
    paused: bool,
}

impl Seat {
    /// The current incarnation's worker id, `w<seat>.<incarnation>`.
    pub(super) fn id(&self) -> String {
        format!("w{}.{}", self.index, self.incarnation)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether a worker process runs in this seat.
    pub(super) fn is_live(&self) -> bool {
        self.child.is_some()
    }
}

/// Everything the fleet needs to start a worker.
pub(super) struct Plan {
    pub(super) exe: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) log: PathBuf,
    pub(super) tasks: u32,
    pub(super) lease_ms: u64,
    pub(super) poll_ms: u64,
    pub(super) max_skew_ms: u64,
    /// Whether every incarnation gets a clock skewed at random by up to `max_skew_ms` either way.
    pub(super) skew: bool,
}

/// What the fleet did by itself, for the report.
#[derive(Debug, Default)]
pub(super) struct FleetCounts {
    pub(super) spawned: u64,
    pub(super) worker_exits: u64,
    pub(super) max_skew_ms: u64,
}

/// The worker processes of a run.
pub(super) struct Fleet {
    plan: Plan,
    seats: Vec<Seat>,
    pub(super) counts: FleetCounts,
}

impl Fleet {
    pub(super) fn new(plan: Plan) -> Fleet {
        Fleet {
            plan,
            seats: Vec::new(),
            counts: FleetCounts::default(),
        }
    }

    /// The handlers' log every worker appends to.
    pub(super) fn log(&self) -> &Path {
        &self.plan.log
    }

    /// Adds seat `index`, whose workers reach the store at `url` (through `proxy` if any), and starts
    /// its first worker.
    pub(super) fn add_seat(
        &mut self,
        index: u32,
        url: String,
        proxy: Option<FaultProxy>,
        rng: &mut Rng,
    ) -> Result<(), CliError> {
        let mut seat = Seat {
            index,
            incarnation: 0,
            child: None,
            url,
            proxy,
            paused: false,
        };
        self.plan.spawn(&mut seat, rng, &mut self.counts)?;
        self.seats.push(seat);
        Ok(())
    }

    pub(super) fn seat(&self, index: u32) -> Option<&Seat> {
        self.seats.iter().find(|seat| seat.index == index)
    }

    /// The seats a worker runs in.
    pub(super) fn live(&self) -> Vec<u32> {
        self.seats
            .iter()
            .filter(|seat| seat.is_live())
            .map(|seat| seat.index)
            .collect()
    }

    /// The seats whose worker runs and is not paused.
    pub(super) fn running(&self) -> Vec<u32> {
        self.seats
            .iter()
            .filter(|seat| seat.is_live() && !seat.paused)
            .map(|seat| seat.index)
            .collect()
    }

    /// Starts a new incarnation in seat `index` if it is empty.
    pub(super) fn respawn(&mut self, index: u32, rng: &mut Rng) -> Result<(), CliError> {
        if let Some(seat) = self
            .seats
            .iter_mut()
            .find(|seat| seat.index == index && !seat.is_live())
        {
            self.plan.spawn(seat, rng, &mut self.counts)?;
            say(&format!("torture: started {}", seat.id()));
        }
        Ok(())
    }

    /// Starts a worker in every empty seat.
    pub(super) fn fill(&mut self, rng: &mut Rng) -> Result<(), CliError> {
        for seat in self.seats.iter_mut().filter(|seat| !seat.is_live()) {
            self.plan.spawn(seat, rng, &mut self.counts)?;
        }
        Ok(())
    }

    /// SIGKILLs the worker of seat `index` and waits for it.
    pub(super) async fn kill(&mut self, index: u32) {
        if let Some(seat) = self.seats.iter_mut().find(|seat| seat.index == index) {
            kill(seat).await;
        }
    }

    /// SIGSTOPs the worker of seat `index` for `pause_ms()` milliseconds (read only when there is a
    /// process to stop); returns its incarnation and the pause when it was stopped.
    pub(super) async fn pause(&mut self, index: u32, pause_ms: impl FnOnce() -> u64) -> Option<(u32, u64)> {
        let seat = self.seats.iter_mut().find(|seat| seat.index == index)?;
        let pid = seat.pid()?;
        let pause = pause_ms();
        say(&format!("torture: SIGSTOP {} for {pause} ms", seat.id()));
        if signal("STOP", &[pid]).await.is_ok() {
            seat.paused = true;
            Some((seat.incarnation, pause))
        } else {
            None
        }
    }

    /// SIGCONTs seat `index` if the same incarnation is still paused.
    pub(super) async fn unpause(&mut self, index: u32, incarnation: u32) {
        if let Some(seat) = self
            .seats
            .iter_mut()
            .find(|seat| seat.index == index && seat.incarnation == incarnation && seat.paused)
        {
            if let Some(pid) = seat.pid() {
                let _ = signal("CONT", &[pid]).await;
            }
            seat.paused = false;
            say(&format!("torture: SIGCONT {}", seat.id()));
        }
    }

    /// Notices workers that exited on their own (e.g. the store was unreachable when they started);
    /// returns their seats, to be restarted.
    pub(super) fn reap_exits(&mut self) -> Vec<u32> {
        let mut exited = Vec::new();
        for seat in self.seats.iter_mut() {
            let status = match seat.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => status,
                _ => continue,
            };
            warn(&format!(
                "torture: worker {} exited by itself ({status}); restarting it",
                seat.id()
            ));
            seat.child = None;
            seat.paused = false;
            self.counts.worker_exits += 1;
            exited.push(seat.index);
        }
        exited
    }

    /// SIGTERMs every worker and waits for them (SIGKILL after a deadline); returns how many needed it.
    pub(super) async fn stop(&mut self) -> u64 {
        let pids: Vec<u32> = self.seats.iter().filter_map(Seat::pid).collect();
        let _ = signal("CONT", &pids).await;
        let _ = signal("TERM", &pids).await;
        let mut stragglers = 0;
        for seat in self.seats.iter_mut() {
            if let Some(mut child) = seat.child.take() {
                if tokio::time::timeout(Duration::from_secs(20), child.wait())
                    .await
                    .is_err()
                {
                    stragglers += 1;
                    warn(&format!(
                        "torture: worker {} ignored SIGTERM for 20 s; killing it",
                        seat.id()
                    ));
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
        }
        stragglers
    }

    /// Counts the workers' warnings that show fencing at work: refused completions and lost leases.
    pub(super) fn warnings(&self) -> (u64, u64) {
        let mut fenced_out = 0;
        let mut leases_lost = 0;
        let Ok(entries) = std::fs::read_dir(&self.plan.dir) else {
            return (0, 0);
        };
        for entry in entries.flatten() {
            if entry.path().extension().and_then(|extension| extension.to_str()) != Some("err") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            for line in text.lines() {
                if line.contains("completion refused by the fence") {
                    fenced_out += 1;
                } else if line.contains("leases lost") || line.contains("lease lost") {
                    leases_lost += 1;
                }
            }
        }
        (fenced_out, leases_lost)
    }
}

impl Plan {
    /// Starts the next incarnation in `seat`.
    fn spawn(&self, seat: &mut Seat, rng: &mut Rng, counts: &mut FleetCounts) -> Result<(), CliError> {
        seat.incarnation += 1;
        let id = seat.id();
        let skew = if self.skew {
            let span = self.max_skew_ms.saturating_mul(2);
            rng.between(0, span) as i64 - self.max_skew_ms as i64
        } else {
            0
        };
        counts.max_skew_ms = counts.max_skew_ms.max(skew.unsigned_abs());
        let output = |suffix: &str| {
            File::create(self.dir.join(format!("{id}.{suffix}")))
                .map_err(|error| CliError::runtime(format!("cannot create the output file of worker {id}: {error}")))
        };
        let child = Command::new(&self.exe)
            .arg("worker")
            .args(["--store", &seat.url, "--worker-id", &id, "--profile", "test"])
            .args(["--tasks", &self.tasks.to_string()])
            .args(["--lease-ms", &self.lease_ms.to_string()])
            .args(["--poll-ms", &self.poll_ms.to_string()])
            .args(["--shutdown-grace-ms", "3000", "--watch-stdin"])
            .arg("--log")
            .arg(&self.log)
            .env("FLEETCRON_CLOCK_SKEW_MS", skew.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(output("out")?))
            .stderr(Stdio::from(output("err")?))
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| CliError::runtime(format!("cannot start worker {id}: {error}")))?;
        seat.child = Some(child);
        seat.paused = false;
        counts.spawned += 1;
        Ok(())
    }
}

/// SIGKILLs a seat's process and waits for it.
async fn kill(seat: &mut Seat) {
    if let Some(mut child) = seat.child.take() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    seat.paused = false;
}
