//! The store-level suite: every contract of the [`Store`] trait, checked on every store the same way
//! (after River's `riverdrivertest` and apalis's `generic_storage_test!`), with [`MemoryStore`] as the
//! reference where a result can be compared.
//!
//! A backend implements [`StoreHarness`] — fresh isolated namespaces (its own SQLite file, PostgreSQL
//! schema, MySQL table prefix or Redis key prefix) at a clock the case gives, more stores on a namespace
//! as other processes would open them, a way in through a [`FaultProxy`] for server stores, and its
//! [`Capabilities`] — then one line in its test binary expands every case into a `#[tokio::test]`:
//!
//! ```text
//! mod store_suite {
//!     fleetcron_conformance::store_suite!(crate::MyHarness);
//! }
//! ```
//!
//! ([`crate::backend_suites!`] expands both suites, each in a module of its own.)
//!
//! A case the store lacks a capability for passes after printing `*** SKIPPED <case>: the store lacks the
//! capability …`; a
//! case whose service cannot be reached fails under `FLEETCRON_REQUIRE_SERVICES=1` (as in CI) and is
//! skipped loudly otherwise ([`crate::service_policy`]). [`StoreBackend`] turns the same harness into
//! the engine-level [`crate::Backend`] of [`crate::conformance_tests!`].
//!
//! [`MemoryStore`]: fleetcron_core::MemoryStore
//! [`FaultProxy`]: crate::proxy::FaultProxy

mod attention;
mod claims;
mod concurrency;
mod engine;
mod faults;
pub mod fixtures;
mod history;
mod keys;
mod locks;
pub mod memory;
mod prune;
mod push;
mod schema;

pub use attention::*;
pub use claims::*;
pub use concurrency::*;
pub use engine::{engine_namespace, StoreBackend};
pub use faults::*;
pub use history::*;
pub use keys::*;
pub use locks::*;
pub use prune::*;
pub use push::*;
pub use schema::*;

use crate::proxy::FaultProxy;
use crate::BoxedFuture;
use chrono::Utc;
use fleetcron_core::{Clock, SharedClock, Store, StoreError, Timestamp};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// How a store answers [`Store::mutate_claims`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimSkipping {
    /// It decides every task (the trait's default).
    None,
    /// It leaves out the tasks whose high-water mark is at or after the floor, comparing whole seconds
    /// (so a mark a fraction of a second past a fractional floor is kept, conservatively).
    WholeSeconds,
    /// It leaves out exactly the tasks whose high-water mark is at or after the floor.
    Exact,
}

/// The order of the ids [`Store::due_for_attention`] answers (the contract leaves it to the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionOrder {
    /// By task id.
    ById,
    /// The task that has waited longest first (by attention time, then id).
    MostOverdueFirst,
}

/// How writers of a store wait for one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locks {
    /// Nobody waits for a writer of another process: optimistic commits (or one process only).
    None,
    /// A writer locks the whole store for its transaction (SQLite's write lock).
    WholeStore,
    /// A writer locks the tasks of its batch only.
    PerTask,
}

/// What a store can do beyond the [`Store`] contract; cases that need more are skipped, loudly.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// The store reads the [`SharedClock`] it is given (embedded stores), so it follows every move of a
    /// [`CaseClock`]. Server stores read their server's clock plus an offset fixed when they open
    /// (and moved by [`StoreNamespace::follow_clock`] where they can).
    pub injectable_clock: bool,
    /// [`Store::subscribe`] pushes wake-ups from every store of the namespace.
    pub push: bool,
    /// How [`Store::mutate_claims`] skips tasks.
    pub claim_skipping: ClaimSkipping,
    /// The order of [`Store::due_for_attention`].
    pub attention_order: AttentionOrder,
    /// The store keeps encoded documents under a versioned schema (every store but the memory one):
    /// migrations, a schema newer than this build and corrupt documents apply.
    pub persistent: bool,
    /// Every operation before [`Store::migrate`] fails with a `Config` error that says to migrate.
    pub refuses_before_migrate: bool,
    /// A server store reached through [`StoreHarness::upstream`], so the fault cases run through a
    /// [`FaultProxy`].
    pub proxy: bool,
    /// A batch in flight is a server transaction: when its connection is cut or stalls past the
    /// timeout, the server rolls it back, so it never commits later.
    pub server_transactions: bool,
    /// After a cut, the first retry works: the pool checks idle connections before it hands one out
    /// (at most one operation fails per cut).
    pub reconnects_at_once: bool,
    /// How writers wait for one another ([`StoreNamespace::hold_lock`]).
    pub locks: Locks,
}

impl Capabilities {
    /// An embedded store: injectable clock, no push, no claim skipping, id order, persistent with
    /// migrations it insists on, one writer at a time, no server.
    pub const EMBEDDED: Self = Self {
        injectable_clock: true,
        push: false,
        claim_skipping: ClaimSkipping::None,
        attention_order: AttentionOrder::ById,
        persistent: true,
        refuses_before_migrate: true,
        proxy: false,
        server_transactions: false,
        reconnects_at_once: false,
        locks: Locks::WholeStore,
    };

    /// A SQL server store: the server's clock, a proxy in front of it, batches as server transactions
    /// locking their tasks, a pool that replaces dead connections; no push, no claim skipping.
    pub const SERVER: Self = Self {
        injectable_clock: false,
        proxy: true,
        server_transactions: true,
        reconnects_at_once: true,
        locks: Locks::PerTask,
        ..Self::EMBEDDED
    };
}

/// A backend under the store suite.
pub trait StoreHarness: Send + Sync + 'static {
    /// One isolated namespace of its store.
    type Namespace: StoreNamespace;

    /// What the store can do.
    const CAPABILITIES: Capabilities;

    /// Whether the backend's service can be reached: `Err(reason)` when it cannot.
    fn available(&self) -> BoxedFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// The server's address, for stores with [`Capabilities::proxy`] (a [`FaultProxy`] forwards to it).
    fn upstream(&self) -> Option<SocketAddr> {
        None
    }

    /// A fresh namespace no other test sees, whose stores read `clock`: injected (embedded stores) or
    /// as the offset `clock` has from this machine's clock when a store opens ([`clock_offset`]).
    /// Dropping it removes what it holds, best effort.
    fn namespace(&self, clock: SharedClock) -> BoxedFuture<'_, Self::Namespace>;
}

/// One namespace of a [`StoreHarness`].
pub trait StoreNamespace: Send + Sync + 'static {
    /// The store.
    type Store: Store;

    /// Another store on this namespace, as another process would open it, not migrated. (The memory
    /// store has one store per namespace: it answers that one again.)
    fn open(&self) -> BoxedFuture<'_, Arc<Self::Store>>;

    /// Moves `store`'s clock to the namespace clock's current offset, for server stores that can
    /// change it while open; false when the store cannot (a new store then opens at the new offset).
    fn follow_clock(&self, store: &Self::Store) -> bool {
        let _ = store;
        false
    }

    /// A store on this namespace that reaches its server at `address` (a proxy, or a port nothing
    /// listens on), with short timeouts: an operation that gets no answer fails within about a second.
    fn open_via(&self, address: SocketAddr) -> BoxedFuture<'_, Result<Arc<Self::Store>, StoreError>> {
        let _ = address;
        Box::pin(async { Err(StoreError::Config("this store has no server to reach".to_owned())) })
    }

    /// Writes a schema version five above this build's into the namespace, behind the store's back
    /// ([`Capabilities::persistent`]).
    fn schema_from_the_future(&self) -> BoxedFuture<'_, ()> {
        Box::pin(async { panic!("a persistent store's harness must write a schema version from the future") })
    }

    /// Overwrites the stored state document of `task_id` with one that does not decode, behind the
    /// store's back ([`Capabilities::persistent`]).
    fn corrupt_state(&self, task_id: &str) -> BoxedFuture<'_, ()> {
        let _ = task_id;
        Box::pin(async { panic!("a persistent store's harness must corrupt a state document") })
    }

    /// What the store's error messages name it by (file path, schema, database, prefix), if anything.
    fn label(&self) -> Option<String> {
        None
    }

    /// Another session takes the lock a writer of `task_id` (a stored task) needs — its row, or the
    /// whole store ([`Capabilities::locks`]) — and holds it until the returned value is dropped.
    fn hold_lock(&self, task_id: &str) -> BoxedFuture<'_, LockHolder> {
        let _ = task_id;
        Box::pin(async { panic!("a store with locks must hold one for the suite") })
    }

    /// A store on this namespace that gives up waiting for a lock after about 300 ms (1 s where
    /// the server counts in seconds), as `Unavailable`.
    fn open_impatient(&self) -> BoxedFuture<'_, Arc<Self::Store>> {
        Box::pin(async { panic!("a store with locks must open an impatient store for the suite") })
    }
}

/// What holds a lock for [`StoreNamespace::hold_lock`] (another session's connection, in a
/// transaction): dropping it closes the session, and the lock goes with it.
pub type LockHolder = Box<dyn std::any::Any + Send>;

/// The store of a harness.
pub type StoreOf<H> = <<H as StoreHarness>::Namespace as StoreNamespace>::Store;

/// The offset of `clock` from this machine's clock, rounded to whole milliseconds (what a server
/// store opened on a namespace of `clock` adds to its server's clock).
pub fn clock_offset(clock: &dyn Clock) -> chrono::Duration {
    let micros = (clock.now() - Utc::now()).num_microseconds().unwrap_or(0);
    chrono::Duration::milliseconds((micros + micros.signum() * 500) / 1000)
}

/// The `user@host:port` part of a server URL and the rest (path, query), split.
fn authority(url: &str) -> (&str, &str, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    (scheme, authority, tail)
}

/// `url` with its host and port replaced by `address`, its user, password, path and query kept: the
/// URL of the same server through a [`FaultProxy`] (or of a port nothing listens on).
pub fn url_via(url: &str, address: SocketAddr) -> String {
    let (scheme, authority, tail) = authority(url);
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}{address}{tail}")
}

/// The address of the server a URL names (`default_port` when it names none), resolved.
pub fn url_address(url: &str, default_port: u16) -> SocketAddr {
    use std::net::ToSocketAddrs;
    let (_, authority, _) = authority(url);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if host
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    };
    host.to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .unwrap_or_else(|| panic!("cannot resolve the test server {host}"))
}

/// A clock a case moves: this machine's clock plus an offset in whole milliseconds.
#[derive(Debug)]
pub struct CaseClock {
    offset_ms: AtomicI64,
}

impl CaseClock {
    /// A clock that reads `at` now and then advances at the real rate.
    pub fn starting_at(at: Timestamp) -> Arc<Self> {
        let clock = Arc::new(Self {
            offset_ms: AtomicI64::new(0),
        });
        clock.set(at);
        clock
    }

    /// Makes the clock read `at` now (or up to a millisecond later: never earlier).
    pub fn set(&self, at: Timestamp) {
        let micros = (at - Utc::now()).num_microseconds().unwrap_or(i64::MAX - 999);
        self.offset_ms.store((micros + 999).div_euclid(1000), Ordering::SeqCst);
    }

    /// The clock as a [`SharedClock`].
    pub fn shared(self: &Arc<Self>) -> SharedClock {
        self.clone()
    }
}

impl Clock for CaseClock {
    fn now(&self) -> Timestamp {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// One case's view of the harness: its name, the store's capabilities and helpers.
pub struct Suite<'a, H: StoreHarness> {
    /// The harness.
    pub harness: &'a H,
    /// The case.
    pub case: &'static str,
    /// The store's capabilities.
    pub capabilities: Capabilities,
}

/// A fresh namespace, its clock and a migrated store on it.
pub struct Fresh<H: StoreHarness> {
    /// The namespace's clock.
    pub clock: Arc<CaseClock>,
    /// The namespace.
    pub ns: H::Namespace,
    /// A migrated store on it.
    pub store: Arc<StoreOf<H>>,
}

impl<'a, H: StoreHarness> Suite<'a, H> {
    /// The case `case` on `harness`, or `None` when its service is unreachable and not required (see
    /// [`crate::service_policy`]).
    pub async fn start(harness: &'a H, case: &'static str) -> Option<Self> {
        crate::service_policy(harness.available().await, case).then_some(Self {
            harness,
            case,
            capabilities: H::CAPABILITIES,
        })
    }

    /// Whether the store has what the case needs (`has`); false after a loud message naming `what`.
    pub fn needs(&self, has: bool, what: &str) -> bool {
        if !has {
            eprintln!("\n*** SKIPPED {}: the store lacks the capability {what}\n", self.case);
        }
        has
    }

    /// A fresh namespace whose clock reads `at` now.
    pub async fn namespace(&self, at: Timestamp) -> (Arc<CaseClock>, H::Namespace) {
        let clock = CaseClock::starting_at(at);
        let ns = self.harness.namespace(clock.shared()).await;
        (clock, ns)
    }

    /// A fresh namespace whose clock reads `at` now, and a migrated store on it.
    pub async fn fresh(&self, at: Timestamp) -> Fresh<H> {
        let (clock, ns) = self.namespace(at).await;
        let store = migrated(&ns).await;
        Fresh { clock, ns, store }
    }

    /// Moves the namespace clock to `to` and returns a store on `ns` that reads it: `store` itself
    /// when it follows the clock (injectable, or [`StoreNamespace::follow_clock`]), else a new store
    /// opened at the new offset.
    pub async fn at_clock(
        &self,
        ns: &H::Namespace,
        clock: &CaseClock,
        store: &Arc<StoreOf<H>>,
        to: Timestamp,
    ) -> Arc<StoreOf<H>> {
        clock.set(to);
        if self.capabilities.injectable_clock || ns.follow_clock(store) {
            store.clone()
        } else {
            migrated(ns).await
        }
    }

    /// Whether `store`'s own clock can be moved while it is open (to check that it holds when moved back).
    pub fn movable_clock(&self, ns: &H::Namespace, store: &StoreOf<H>) -> bool {
        self.capabilities.injectable_clock || ns.follow_clock(store)
    }

    /// A proxy in front of the store's server.
    pub async fn proxy(&self) -> Arc<FaultProxy> {
        let upstream = self
            .harness
            .upstream()
            .unwrap_or_else(|| panic!("{}: a store with the proxy capability names its upstream", self.case));
        Arc::new(FaultProxy::start(upstream).await.expect("start the fault proxy"))
    }

    /// A proxy in front of the namespace's server and a migrated store connected through it.
    pub async fn proxied(&self, ns: &H::Namespace) -> (Arc<FaultProxy>, Arc<StoreOf<H>>) {
        let proxy = self.proxy().await;
        let store = ns
            .open_via(proxy.address())
            .await
            .unwrap_or_else(|error| panic!("{}: connecting through the proxy: {error}", self.case));
        store.migrate().await.expect("migrate through the proxy");
        (proxy, store)
    }
}

/// A fresh namespace of `harness` on this machine's clock, for a backend's own test `test`; `None`
/// (after a loud message) when the service is unreachable and not required ([`crate::service_policy`]).
pub async fn namespace_for<H: StoreHarness>(harness: &H, test: &str) -> Option<H::Namespace> {
    if !crate::service_policy(harness.available().await, test) {
        return None;
    }
    Some(harness.namespace(fleetcron_core::clock::system_clock()).await)
}

/// A new store on `ns`, migrated.
pub async fn migrated<N: StoreNamespace + ?Sized>(ns: &N) -> Arc<N::Store> {
    let store = ns.open().await;
    store.migrate().await.expect("migrate");
    store
}

/// Expands every store-suite case into a `#[tokio::test]` for the harness expression `$harness` (a
/// value implementing [`StoreHarness`]). Invoke it in a module of its own (the tests take the cases'
/// names); the calling crate needs `tokio` as a dev-dependency.
#[macro_export]
macro_rules! store_suite {
    ($harness:expr) => {
        $crate::__store_suite_cases!(
            $harness;
            mutate_round_trips_states_and_runs,
            a_pending_row_starts_and_ends_like_the_reference_store,
            updates_in_one_batch_match_the_reference_store,
            range_rows_round_trip,
            runs_page_newest_first,
            load_sorts_by_id_and_skips_unknown_ids,
            due_for_attention_answers_due_ids_up_to_the_limit,
            now_is_monotonic_and_whole_milliseconds,
            the_unique_key_refuses_a_second_row_for_a_slot_and_attempt,
            a_duplicate_in_the_middle_of_a_batch_leaves_nothing_written,
            a_batch_refused_by_its_last_task_leaves_nothing_written,
            prune_keep_last_keeps_the_newest_rows_and_every_unfinished_row,
            prune_max_age_uses_the_store_clock_and_end_times,
            prune_never_deletes_a_pending_row,
            claims_leave_out_only_accounted_tasks,
            enabling_after_a_long_disable_is_bounded,
            large_history_rows_round_trip_in_one_batch,
            a_batch_of_1000_tasks_registers_and_claims_in_one_mutation,
            two_stores_serialise_200_increments_of_an_existing_task,
            two_stores_serialise_200_increments_of_a_new_task,
            racing_registrations_create_a_new_task_once,
            stores_racing_for_the_same_slots_claim_each_once,
            batches_in_opposite_orders_never_deadlock,
            a_lock_held_elsewhere_makes_a_writer_unavailable_past_its_timeout,
            a_writer_waits_for_a_lock_within_its_timeout,
            concurrent_migrations_apply_each_version_once,
            a_schema_newer_than_this_build_is_refused,
            operations_before_migrate_say_to_migrate,
            a_corrupt_state_document_is_corrupt,
            a_cut_mid_mutation_commits_nothing_and_the_retry_commits_once,
            refused_connections_are_unavailable_until_the_server_is_back,
            a_stall_beyond_the_timeout_is_unavailable_then_resume_works,
            cuts_during_concurrent_increments_lose_and_double_nothing,
            an_unreachable_server_is_unavailable_within_the_timeouts,
            brief_cuts_never_cancel_a_run_whose_lease_survives,
            an_outage_longer_than_the_lease_cancels_the_run_and_another_worker_abandons_it,
            a_notification_reaches_every_store_of_the_namespace_only,
            subscriptions_reconnect_after_a_cut_and_wake_their_subscribers,
            a_manual_trigger_wakes_another_worker_through_push
        );
    };
}

/// `let ns = namespace_or_skip!(harness);` in a backend's own test: a fresh namespace of the harness
/// ([`namespace_for`], named after the test), or a return from the test when its service is
/// unreachable and not required.
#[macro_export]
macro_rules! namespace_or_skip {
    ($harness:expr) => {{
        fn here() {}
        let here = ::std::any::type_name_of_val(&here);
        let test = here.trim_end_matches("::here").trim_end_matches("::{{closure}}");
        match $crate::store_suite::namespace_for(&$harness, test).await {
            Some(namespace) => namespace,
            None => return,
        }
    }};
}

/// Expands both suites for the harness `$harness` (a path to a value implementing [`StoreHarness`]):
/// the store suite in a module `store_suite`, the engine-level conformance suite (on
/// [`StoreBackend`]) in a module `conformance`.
#[macro_export]
macro_rules! backend_suites {
    ($harness:path) => {
        mod store_suite {
            $crate::store_suite!($harness);
        }

        mod conformance {
            $crate::conformance_tests!($crate::store_suite::StoreBackend($harness));
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_suite_cases {
    ($harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                if let Some(suite) = $crate::store_suite::Suite::start(&harness, stringify!($case)).await {
                    $crate::store_suite::$case(&suite).await;
                }
            }
        )*
    };
}
