//! The conformance suite on the in-memory store.

fleetcron_conformance::conformance_tests!(fleetcron_conformance::memory::MemoryBackend);

/// The memory store takes the default `mutate_claims` (decides every task): the contract holds.
#[tokio::test]
async fn memory_claims_decide_every_task() {
    let store = fleetcron_core::MemoryStore::new();
    let left_out = fleetcron_conformance::store_cases::claims_leave_out_only_accounted_tasks(&store)
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
    assert!(left_out.is_empty());
}

/// Enabling after 30 days disabled is one range row, in bounded work.
#[tokio::test]
async fn memory_enabling_after_a_long_disable_is_bounded() {
    let store = fleetcron_core::MemoryStore::new();
    let elapsed = fleetcron_conformance::store_cases::enabling_after_a_long_disable_is_bounded(&store)
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
    println!("memory: enabling after 30 days disabled took {elapsed:?}");
}
