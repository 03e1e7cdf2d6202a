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
