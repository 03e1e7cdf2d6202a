//! The store suite's harness of the reference store, [`MemoryStore`]: one store per namespace (the
//! workers of one process share it), on the case's clock.

use super::{Capabilities, Locks, StoreHarness, StoreNamespace};
use crate::BoxedFuture;
use fleetcron_core::{MemoryStore, SharedClock};
use std::sync::Arc;

/// The memory store under the store suite.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryHarness;

/// A namespace: one [`MemoryStore`].
pub struct MemoryNamespace(Arc<MemoryStore>);

impl StoreHarness for MemoryHarness {
    type Namespace = MemoryNamespace;

    const CAPABILITIES: Capabilities = Capabilities {
        push: true,
        claim_skipping: super::ClaimSkipping::Exact,
        persistent: false,
        refuses_before_migrate: false,
        locks: Locks::None,
        ..Capabilities::EMBEDDED
    };

    fn namespace(&self, clock: SharedClock) -> BoxedFuture<'_, MemoryNamespace> {
        Box::pin(async move { MemoryNamespace(Arc::new(MemoryStore::with_clock(clock))) })
    }
}

impl StoreNamespace for MemoryNamespace {
    type Store = MemoryStore;

    fn open(&self) -> BoxedFuture<'_, Arc<MemoryStore>> {
        Box::pin(async move { self.0.clone() })
    }
}
