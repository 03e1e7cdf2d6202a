//! The conformance suite on the in-memory store.

fleetcron_conformance::conformance_tests!(fleetcron_conformance::memory::MemoryBackend);
