//! The conformance suite and the store suite on the in-memory store.

fleetcron_conformance::conformance_tests!(fleetcron_conformance::memory::MemoryBackend);

mod store_suite {
    fleetcron_conformance::store_suite!(fleetcron_conformance::store_suite::memory::MemoryHarness);
}
