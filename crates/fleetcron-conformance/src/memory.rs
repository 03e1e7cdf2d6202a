//! The reference [`Backend`]: the in-memory store. Every strategy of a namespace shares one
//! [`MemoryStore`], as the workers of one process would.

use crate::{Backend, BoxedFuture, Namespace};
use fleetcron_core::{EngineConfig, MemoryStore, MemoryStrategy, SchedulerStrategy, SharedClock};
use std::sync::Arc;

/// The in-memory backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryBackend;

struct MemoryNamespace {
    store: Arc<MemoryStore>,
}

impl Namespace for MemoryNamespace {
    fn strategy(&self, config: EngineConfig) -> BoxedFuture<'_, Arc<dyn SchedulerStrategy>> {
        let store = self.store.clone();
        Box::pin(async move { Arc::new(MemoryStrategy::with_config(store, config)) as Arc<dyn SchedulerStrategy> })
    }
}

impl Backend for MemoryBackend {
    fn namespace(&self, store_clock: SharedClock) -> BoxedFuture<'_, Arc<dyn Namespace>> {
        Box::pin(async move {
            Arc::new(MemoryNamespace {
                store: Arc::new(MemoryStore::with_clock(store_clock)),
            }) as Arc<dyn Namespace>
        })
    }
}
