//! A store harness as the engine-level [`Backend`]: one harness per backend serves both suites.

use super::{StoreHarness, StoreNamespace};
use crate::{Backend, BoxedFuture, Namespace};
use fleetcron_core::{EngineConfig, EngineStrategy, SchedulerStrategy, SharedClock};
use std::net::SocketAddr;
use std::sync::Arc;

/// The engine-level [`Backend`] of a [`StoreHarness`]: every namespace is one of the harness, every
/// worker an [`EngineStrategy`] over a store of its own on it (as a separate process would have):
///
/// ```text
/// fleetcron_conformance::conformance_tests!(fleetcron_conformance::store_suite::StoreBackend(crate::MyHarness));
/// ```
pub struct StoreBackend<H>(pub H);

impl<H: StoreHarness> Backend for StoreBackend<H> {
    fn namespace(&self, store_clock: SharedClock) -> BoxedFuture<'_, Arc<dyn Namespace>> {
        Box::pin(async move { engine_namespace(Arc::new(self.0.namespace(store_clock).await), None) })
    }

    fn available(&self) -> BoxedFuture<'_, Result<(), String>> {
        self.0.available()
    }
}

/// Workers on a store namespace: each opens a store of its own on `ns`, through `via` when given (a
/// [`crate::proxy::FaultProxy`]'s address).
struct EngineNamespace<N> {
    ns: Arc<N>,
    via: Option<SocketAddr>,
}

impl<N: StoreNamespace> Namespace for EngineNamespace<N> {
    fn strategy(&self, config: EngineConfig) -> BoxedFuture<'_, Arc<dyn SchedulerStrategy>> {
        Box::pin(async move {
            let store = match self.via {
                None => self.ns.open().await,
                Some(address) => self
                    .ns
                    .open_via(address)
                    .await
                    .unwrap_or_else(|error| panic!("a worker's store through {address}: {error}")),
            };
            Arc::new(EngineStrategy::with_config(store, config)) as Arc<dyn SchedulerStrategy>
        })
    }
}

/// The engine-level namespace of `ns`: its workers open their stores on it, through `via` when given.
pub fn engine_namespace<N: StoreNamespace>(ns: Arc<N>, via: Option<SocketAddr>) -> Arc<dyn Namespace> {
    Arc::new(EngineNamespace { ns, via })
}
