//! The push channel: a background task that `LISTEN`s on the store's channel and forwards each
//! notification's payload (a task id) to the store's subscribers.
//!
//! The task owns its own single-connection pool, so it never takes a connection from the store's pool.
//! When the connection is lost (or fails to come up) it reconnects with exponential backoff; after every
//! successful `LISTEN` it sends a wake-up ([`WAKE_UP`]), because notifications sent while it was not
//! listening are lost and the engine must poll once to find their work. A connection silent for
//! [`RECYCLE_AFTER`] is replaced, so a connection that died without a reset (a black-holed network)
//! delays pushes by at most that long — polling still finds everything meanwhile.

use fleetcron_core::StoreLabel;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use std::time::Duration;
use tokio::sync::broadcast;

/// The payload of a wake-up: not a task id (ids are never empty), it asks subscribers to poll.
pub(crate) const WAKE_UP: &str = "";

/// How long a silent listening connection is kept before it is replaced.
pub(crate) const RECYCLE_AFTER: Duration = Duration::from_secs(120);

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Settings of the listening task. Its `Debug` leaves out the connect options: sqlx's `Debug` of
/// them shows the password.
#[derive(Clone)]
pub(crate) struct ListenConfig {
    /// How to connect (the store's options).
    pub(crate) connect: PgConnectOptions,
    /// The channel to `LISTEN` on.
    pub(crate) channel: String,
    /// How long connecting and `LISTEN` may take.
    pub(crate) timeout: Duration,
    /// The store, for logs (and to scrub driver messages).
    pub(crate) label: StoreLabel,
}

impl std::fmt::Debug for ListenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenConfig")
            .field("channel", &self.channel)
            .field("timeout", &self.timeout)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Runs until aborted (the store aborts it when dropped).
pub(crate) async fn run(config: ListenConfig, sender: broadcast::Sender<String>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match listen(&config).await {
            Ok((mut listener, pool)) => {
                backoff = FIRST_BACKOFF;
                tracing::debug!(store = %config.label, channel = %config.channel, "listening for triggers");
                let _ = sender.send(WAKE_UP.to_owned());
                forward(&mut listener, &sender, &config).await;
                drop(listener);
                // Says goodbye to the server when the connection still works; never waits long.
                let _ = tokio::time::timeout(Duration::from_secs(1), pool.close()).await;
            }
            Err(error) => {
                tracing::warn!(
                    store = %config.label,
                    error = %config.label.scrub(&error.to_string()),
                    retry_in_ms = backoff.as_millis() as u64,
                    "cannot listen for trigger notifications; polling meanwhile"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Connects a new listener and subscribes to the channel.
async fn listen(config: &ListenConfig) -> Result<(PgListener, PgPool), sqlx::Error> {
    let timed_out = || {
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connecting timed out",
        ))
    };
    // A fresh pool each time: a connection stuck on a stalled network cannot hold the next one up.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(config.timeout)
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(config.connect.clone());
    let mut listener = tokio::time::timeout(config.timeout, PgListener::connect_with(&pool))
        .await
        .map_err(|_| timed_out())??;
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    tokio::time::timeout(config.timeout, listener.listen(&config.channel))
        .await
        .map_err(|_| timed_out())??;
    Ok((listener, pool))
}

/// Forwards notifications until the connection is lost or has been silent for [`RECYCLE_AFTER`].
async fn forward(listener: &mut PgListener, sender: &broadcast::Sender<String>, config: &ListenConfig) {
    loop {
        match tokio::time::timeout(RECYCLE_AFTER, listener.try_recv()).await {
            Ok(Ok(Some(notification))) => {
                // No receiver is fine: nobody is waiting for pushes right now.
                let _ = sender.send(notification.payload().to_owned());
            }
            Ok(Ok(None)) => {
                tracing::warn!(store = %config.label, "lost the listening connection; reconnecting");
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(store = %config.label, error = %config.label.scrub(&error.to_string()),
                    "listening connection failed; reconnecting");
                return;
            }
            Err(_) => {
                tracing::debug!(store = %config.label, "replacing a silent listening connection");
                return;
            }
        }
    }
}
