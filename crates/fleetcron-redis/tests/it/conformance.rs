//! The public conformance suite against the Redis store. Every test gets its own key prefix; every
//! worker of a test opens its own [`RedisStore`] on it, as separate processes would. The store clock is
//! injected as an offset from the server's `TIME`.

use crate::{random_prefix, redis_url, server_reachable};
use fleetcron_conformance::{Backend, BoxedFuture, Namespace};
use fleetcron_core::{EngineConfig, SchedulerStrategy, SharedClock};
use fleetcron_redis::{RedisOptions, RedisStore, RedisStrategy};
use std::sync::Arc;

struct RedisBackend;

struct RedisNamespace {
    keys: crate::Namespace,
    clock_offset: chrono::Duration,
}

impl Namespace for RedisNamespace {
    fn strategy(&self, config: EngineConfig) -> BoxedFuture<'_, Arc<dyn SchedulerStrategy>> {
        Box::pin(async move {
            let options = RedisOptions::default()
                .with_key_prefix(self.keys.prefix.clone())
                .with_clock_offset(self.clock_offset);
            let store = RedisStore::connect_with(&redis_url(), options)
                .await
                .expect("connect the namespace's store");
            Arc::new(RedisStrategy::with_config(Arc::new(store), config)) as Arc<dyn SchedulerStrategy>
        })
    }
}

impl Backend for RedisBackend {
    fn namespace(&self, store_clock: SharedClock) -> BoxedFuture<'_, Arc<dyn Namespace>> {
        Box::pin(async move {
            Arc::new(RedisNamespace {
                keys: crate::Namespace {
                    prefix: random_prefix(),
                },
                clock_offset: store_clock.now() - chrono::Utc::now(),
            }) as Arc<dyn Namespace>
        })
    }

    fn injectable_store_clock(&self) -> bool {
        true
    }

    fn available(&self) -> BoxedFuture<'_, Result<(), String>> {
        Box::pin(server_reachable())
    }
}

fleetcron_conformance::conformance_tests!(crate::conformance::RedisBackend);
