//! The faults: their kinds, the seeded schedule that picks one about every `--fault-every-ms`, how
//! each is applied to the fleet, the store or the proxies, and its deferred second half (a respawn, a
//! SIGCONT, the end of an outage, the enable after a disable). The operator's triggers, disables and
//! enables run beside the loop, so a SIGSTOPped worker holding the SQLite write lock never blocks the
//! SIGCONT that frees it.

use super::check::DisabledWindow;
use super::fleet::Fleet;
use super::namespace::Backend;
use super::{ms, TortureArgs};
use crate::process::{say, warn};
use crate::CliError;
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use fleetcron::{SchedulerError, SchedulerStrategy, UpdateScheduledTaskInput};
use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The faults the harness can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Fault {
    /// Every fault below.
    All,
    /// No fault: a plain run.
    None,
    /// SIGKILL a worker and restart it.
    Kill,
    /// SIGSTOP a worker longer than the lease, then SIGCONT.
    Pause,
    /// Skewed worker clocks.
    Skew,
    /// Connection cuts and per-worker outages through a proxy (server stores).
    Cut,
    /// Store restart (SQLite: every worker dies at once; servers: `--store-restart-cmd`).
    Restart,
    /// Concurrent manual triggers.
    Trigger,
    /// Enable/disable flips.
    Flip,
}

/// The faults `--faults` asks for (`all` expanded, `none` dropped).
pub(super) fn selected(faults: &[Fault]) -> HashSet<Fault> {
    if faults.contains(&Fault::All) {
        [
            Fault::Kill,
            Fault::Pause,
            Fault::Skew,
            Fault::Cut,
            Fault::Restart,
            Fault::Trigger,
            Fault::Flip,
        ]
        .into_iter()
        .collect()
    } else {
        faults.iter().copied().filter(|fault| *fault != Fault::None).collect()
    }
}

/// Whether connections are cut: asked for, and the store is a server (each worker then talks through
/// its own proxy).
pub(super) fn cuts(selected: &HashSet<Fault>, backend: Backend) -> bool {
    selected.contains(&Fault::Cut) && backend != Backend::Sqlite
}

/// A small deterministic generator (xorshift64*): the fault schedule is reproducible from the seed.
pub(super) struct Rng(u64);

impl Rng {
    /// The generator of the schedule of `seed`.
    pub(super) fn seeded(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `low..=high`.
    pub(super) fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next() % (high - low + 1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        let index = (self.next() % items.len() as u64) as usize;
        items.get(index).copied()
    }
}

/// What was injected, for the report.
#[derive(Debug, Default)]
pub(super) struct FaultCounts {
    pub(super) kill: u64,
    pub(super) pause: u64,
    pub(super) cut: u64,
    pub(super) outage: u64,
    pub(super) restart: u64,
    pub(super) flip: u64,
}

/// Deferred actions: the second half of a fault.
#[derive(Debug, Clone)]
enum Action {
    Respawn(u32),
    Continue { seat: u32, incarnation: u32 },
    Resume(u32),
    Enable(String, DateTime<Utc>),
}

/// The deferred actions, in the order they fall due (ties in the order they were scheduled).
#[derive(Default)]
struct Deferred {
    actions: BTreeMap<(Instant, u64), Action>,
    sequence: u64,
}

impl Deferred {
    /// Schedules `action` for `after` from now.
    fn after(&mut self, after: Duration, action: Action) {
        self.sequence += 1;
        self.actions.insert((Instant::now() + after, self.sequence), action);
    }

    /// The next action due at `now`, if any.
    fn due(&mut self, now: Instant) -> Option<Action> {
        let entry = self.actions.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }

    /// Every pending action, due or not, in order.
    fn take_all(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions).into_values().collect()
    }
}

/// The end of an operator's enable or disable, which runs beside the fault loop: a SIGSTOPped worker
/// may hold the SQLite write lock, and the loop must stay free to send it SIGCONT.
enum AdminOutcome {
    Disabled {
        id: String,
        at: DateTime<Utc>,
    },
    DisableFailed {
        id: String,
        error: String,
    },
    Enabled {
        id: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    EnableFailed {
        id: String,
        error: String,
    },
}

/// Disables `id`.
async fn disable(operator: Arc<dyn SchedulerStrategy>, id: String) -> AdminOutcome {
    let input = UpdateScheduledTaskInput {
        id: id.clone(),
        enabled: Some(false),
    };
    match operator.update_task(input).await {
        Ok(_) => AdminOutcome::Disabled { id, at: Utc::now() },
        Err(error) => AdminOutcome::DisableFailed {
            id,
            error: error.to_string(),
        },
    }
}

/// Enables `id` again, retried until it lands (a task left disabled would make every later slot
/// "skipped"): the disabled window ran from `from` to now.
async fn enable(operator: Arc<dyn SchedulerStrategy>, id: String, from: DateTime<Utc>) -> AdminOutcome {
    let to = Utc::now();
    let mut attempts = 0;
    loop {
        let input = UpdateScheduledTaskInput {
            id: id.clone(),
            enabled: Some(true),
        };
        match operator.update_task(input).await {
            Ok(_) => return AdminOutcome::Enabled { id, from, to },
            Err(error) if attempts < 30 => {
                attempts += 1;
                warn(&format!("torture: enabling {id} failed ({error}); retrying"));
                tokio::time::sleep(ms(500)).await;
            }
            Err(error) => {
                return AdminOutcome::EnableFailed {
                    id,
                    error: error.to_string(),
                }
            }
        }
    }
}

/// Triggers sent by the operator connection.
#[derive(Debug, Default)]
pub(super) struct Triggers {
    pub(super) sent: u64,
    pub(super) accepted: HashSet<String>,
    pub(super) coalesced: u64,
    pub(super) refused: u64,
    pub(super) unconfirmed: u64,
}

/// What the fault phase leaves for the verdict.
pub(super) struct Injected {
    pub(super) counts: FaultCounts,
    pub(super) triggers: Triggers,
    /// When each flipped task was disabled (no slot of it may run then).
    pub(super) disabled: Vec<DisabledWindow>,
}

/// The state of the fault phase.
pub(super) struct Faults {
    kinds: Vec<Fault>,
    trigger: bool,
    flippable: Vec<String>,
    trigger_targets: Vec<String>,
    workers: u32,
    fault_every_ms: u64,
    lease_ms: u64,
    store_restart_cmd: Option<String>,
    operator: Arc<dyn SchedulerStrategy>,
    counts: FaultCounts,
    deferred: Deferred,
    /// Manual triggers in flight.
    in_flight: JoinSet<()>,
    /// Disables and enables in flight.
    admin: JoinSet<AdminOutcome>,
    triggers: Arc<Mutex<Triggers>>,
    disabled: Vec<DisabledWindow>,
    flipped: HashSet<String>,
    next_fault: Instant,
    next_trigger: Instant,
    last_restart: Instant,
}

impl Faults {
    /// The faults of `selected` that apply to this store, the first due at random from `started` on.
    pub(super) fn new(
        args: &TortureArgs,
        selected: &HashSet<Fault>,
        backend: Backend,
        operator: Arc<dyn SchedulerStrategy>,
        started: Instant,
        rng: &mut Rng,
    ) -> Faults {
        let flippable: Vec<String> = (0..2).map(|index| format!("t{index:03}")).collect();
        let mut trigger_targets: Vec<String> = (2..args.tasks).map(|index| format!("t{index:03}")).collect();
        trigger_targets.extend(["hold".to_owned(), "manual".to_owned()]);
        let mut kinds = Vec::new();
        for (fault, enabled) in [
            (Fault::Kill, true),
            (Fault::Pause, true),
            (Fault::Cut, cuts(selected, backend)),
            (
                Fault::Restart,
                backend == Backend::Sqlite || args.store_restart_cmd.is_some(),
            ),
            (Fault::Flip, true),
        ] {
            if enabled && selected.contains(&fault) {
                kinds.push(fault);
            }
        }
        let next_fault = started + ms(rng.between(args.fault_every_ms / 2, args.fault_every_ms * 3 / 2));
        Faults {
            kinds,
            trigger: selected.contains(&Fault::Trigger),
            flippable,
            trigger_targets,
            workers: args.workers,
            fault_every_ms: args.fault_every_ms,
            lease_ms: args.lease_ms,
            store_restart_cmd: args.store_restart_cmd.clone(),
            operator,
            counts: FaultCounts::default(),
            deferred: Deferred::default(),
            in_flight: JoinSet::new(),
            admin: JoinSet::new(),
            triggers: Arc::new(Mutex::new(Triggers::default())),
            disabled: Vec::new(),
            flipped: HashSet::new(),
            next_fault,
            next_trigger: started + ms(500),
            last_restart: started,
        }
    }

    /// One turn of the fault loop at `now`: restart workers that exited, book the operator's finished
    /// calls, apply the second halves that fell due, send triggers, and inject the next fault if due.
    pub(super) async fn step(&mut self, now: Instant, fleet: &mut Fleet, rng: &mut Rng) -> Result<(), CliError> {
        for index in fleet.reap_exits() {
            self.deferred.after(ms(500), Action::Respawn(index));
        }
        while let Some(joined) = self.admin.try_join_next() {
            let outcome = joined.map_err(|error| CliError::runtime(format!("an operator call failed: {error}")))?;
            if let Some((after, action)) = self.settle_admin(outcome, rng)? {
                self.deferred.after(after, action);
            }
        }
        while let Some(action) = self.deferred.due(now) {
            self.apply(action, fleet, rng).await?;
        }
        if self.trigger && now >= self.next_trigger {
            self.send_triggers(now, rng);
        }
        while self.in_flight.try_join_next().is_some() {}
        if now >= self.next_fault {
            self.inject(now, fleet, rng).await;
        }
        Ok(())
    }

    /// The end of the faults: applies every pending second half at once (SIGCONT, respawn, resume,
    /// enable) and waits for the operator's calls; returns what was injected.
    pub(super) async fn wind_down(mut self, fleet: &mut Fleet, rng: &mut Rng) -> Result<Injected, CliError> {
        say("torture: faults stop; undoing paused processes, outages and disabled tasks");
        for action in self.deferred.take_all() {
            self.apply(action, fleet, rng).await?;
        }
        while let Some(joined) = self.admin.join_next().await {
            let outcome = joined.map_err(|error| CliError::runtime(format!("an operator call failed: {error}")))?;
            if let Some((_, Action::Enable(id, from))) = self.settle_admin(outcome, rng)? {
                self.admin.spawn(enable(self.operator.clone(), id, from));
            }
        }
        while self.in_flight.join_next().await.is_some() {}
        let triggers = match Arc::try_unwrap(self.triggers) {
            Ok(triggers) => triggers.into_inner().unwrap_or_default(),
            Err(shared) => shared
                .lock()
                .map(|mut triggers| std::mem::take(&mut *triggers))
                .unwrap_or_default(),
        };
        Ok(Injected {
            counts: self.counts,
            triggers,
            disabled: self.disabled,
        })
    }

    /// Sends one to four concurrent manual triggers to random tasks.
    fn send_triggers(&mut self, now: Instant, rng: &mut Rng) {
        self.next_trigger = now + ms(rng.between(200, 900));
        for _ in 0..rng.between(1, 4) {
            if let Some(target) = rng.pick(&self.trigger_targets.iter().collect::<Vec<_>>()) {
                let (operator, triggers, target) = (self.operator.clone(), self.triggers.clone(), target.clone());
                self.in_flight.spawn(async move {
                    let outcome = operator.trigger_task(&target).await;
                    if let Ok(mut triggers) = triggers.lock() {
                        triggers.sent += 1;
                        match outcome {
                            Ok(receipt) => {
                                triggers.coalesced += u64::from(receipt.coalesced);
                                triggers.accepted.insert(receipt.trigger_id);
                            }
                            Err(SchedulerError::TaskDisabled(_) | SchedulerError::UnknownTask(_)) => {
                                triggers.refused += 1;
                            }
                            Err(_) => triggers.unconfirmed += 1,
                        }
                    }
                });
            }
        }
    }

    /// Picks the next fault's time and kind, and injects it.
    async fn inject(&mut self, now: Instant, fleet: &mut Fleet, rng: &mut Rng) {
        self.next_fault = now + ms(rng.between(self.fault_every_ms / 2, self.fault_every_ms * 3 / 2));
        let Some(mut kind) = rng.pick(&self.kinds) else { return };
        if kind == Fault::Restart && now.duration_since(self.last_restart) < Duration::from_secs(15) {
            kind = Fault::Kill;
        }
        match kind {
            Fault::Kill => {
                if let Some(index) = rng.pick(&fleet.live()) {
                    if let Some(seat) = fleet.seat(index) {
                        say(&format!("torture: SIGKILL {}", seat.id()));
                        fleet.kill(index).await;
                        self.counts.kill += 1;
                        self.deferred.after(ms(rng.between(200, 2500)), Action::Respawn(index));
                    }
                }
            }
            Fault::Pause => {
                if let Some(index) = rng.pick(&fleet.running()) {
                    let lease_ms = self.lease_ms;
                    let paused = fleet.pause(index, || lease_ms + rng.between(500, 2500)).await;
                    if let Some((incarnation, pause)) = paused {
                        self.counts.pause += 1;
                        self.deferred.after(
                            ms(pause),
                            Action::Continue {
                                seat: index,
                                incarnation,
                            },
                        );
                    }
                }
            }
            Fault::Cut => {
                let index = rng.between(1, u64::from(self.workers)) as u32;
                if let Some(proxy) = fleet.seat(index).and_then(|seat| seat.proxy.as_ref()) {
                    if rng.between(0, 1) == 0 {
                        say(&format!("torture: cut the connections of seat w{index}"));
                        proxy.cut();
                        self.counts.cut += 1;
                    } else {
                        let outage = rng.between(300, self.lease_ms + 2000);
                        say(&format!("torture: network outage of seat w{index} for {outage} ms"));
                        proxy.refuse();
                        proxy.cut();
                        self.counts.outage += 1;
                        self.deferred.after(ms(outage), Action::Resume(index));
                    }
                }
            }
            Fault::Restart => {
                self.last_restart = now;
                self.counts.restart += 1;
                match &self.store_restart_cmd {
                    Some(command) => {
                        say(&format!("torture: restarting the store: {command}"));
                        let status = tokio::time::timeout(
                            Duration::from_secs(120),
                            Command::new("sh").args(["-c", command]).stdin(Stdio::null()).status(),
                        )
                        .await;
                        match status {
                            Ok(Ok(status)) if status.success() => {}
                            other => warn(&format!("torture: the store restart command failed: {other:?}")),
                        }
                    }
                    None => {
                        say("torture: the whole fleet dies at once (SIGKILL); the store file survives");
                        for index in fleet.live() {
                            fleet.kill(index).await;
                            self.deferred.after(ms(rng.between(500, 2000)), Action::Respawn(index));
                        }
                    }
                }
            }
            Fault::Flip => {
                let candidates: Vec<&String> = self.flippable.iter().filter(|id| !self.flipped.contains(*id)).collect();
                if let Some(id) = rng.pick(&candidates).cloned() {
                    self.flipped.insert(id.clone());
                    self.admin.spawn(disable(self.operator.clone(), id));
                }
            }
            Fault::All | Fault::None | Fault::Skew | Fault::Trigger => {}
        }
    }

    /// Applies the second half of a fault.
    async fn apply(&mut self, action: Action, fleet: &mut Fleet, rng: &mut Rng) -> Result<(), CliError> {
        match action {
            Action::Respawn(index) => fleet.respawn(index, rng)?,
            Action::Continue {
                seat: index,
                incarnation,
            } => fleet.unpause(index, incarnation).await,
            Action::Resume(index) => {
                if let Some(proxy) = fleet.seat(index).and_then(|seat| seat.proxy.as_ref()) {
                    proxy.resume();
                }
            }
            Action::Enable(id, from) => {
                self.admin.spawn(enable(self.operator.clone(), id, from));
            }
        }
        Ok(())
    }

    /// Books an operator call's end; returns the action it schedules (the enable after a disable).
    fn settle_admin(&mut self, outcome: AdminOutcome, rng: &mut Rng) -> Result<Option<(Duration, Action)>, CliError> {
        Ok(match outcome {
            AdminOutcome::Disabled { id, at } => {
                say(&format!("torture: disabled {id}"));
                self.counts.flip += 1;
                Some((ms(rng.between(1500, 4000)), Action::Enable(id, at)))
            }
            AdminOutcome::DisableFailed { id, error } => {
                // It may have been applied: make sure it is enabled again, but claim no window.
                warn(&format!("torture: disabling {id} failed: {error}"));
                Some((ms(1000), Action::Enable(id, DateTime::<Utc>::MAX_UTC)))
            }
            AdminOutcome::Enabled { id, from, to } => {
                if from < to {
                    self.disabled.push(DisabledWindow {
                        task: id.clone(),
                        from,
                        to,
                    });
                }
                self.flipped.remove(&id);
                say(&format!("torture: enabled {id}"));
                None
            }
            AdminOutcome::EnableFailed { id, error } => {
                return Err(CliError::unreachable(format!("cannot enable {id}: {error}")));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_reproducible_and_in_range() {
        let mut a = Rng(42);
        let mut b = Rng(42);
        for _ in 0..1000 {
            let x = a.between(3, 9);
            assert_eq!(x, b.between(3, 9));
            assert!((3..=9).contains(&x));
        }
    }
}
