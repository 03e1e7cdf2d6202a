//! The wake-up listener: a background task subscribed to `<prefix>:wake` that feeds the store's
//! broadcast channel. Pub/sub is lossy (a message published while the listener reconnects is gone),
//! so after every (re)subscription the listener sends one empty wake-up, which tells the engine to
//! poll; polling remains the fallback in any case.

use fleetcron_core::StoreLabel;
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::broadcast;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Listens until aborted (when the store is dropped), reconnecting with exponential backoff.
pub(crate) async fn listen(
    client: redis::Client,
    channel: String,
    wakeups: broadcast::Sender<String>,
    connection_timeout: Duration,
    label: StoreLabel,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match subscribe(&client, &channel, connection_timeout).await {
            Ok(pubsub) => {
                backoff = MIN_BACKOFF;
                tracing::debug!(server = %label, %channel, "subscribed to fleetcron wake-ups");
                // Anything published while we were not subscribed is lost: have the engine poll now.
                let _ = wakeups.send(String::new());
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    if let Ok(task_id) = message.get_payload::<String>() {
                        // No receiver is fine: nobody listens yet, or workers poll as well.
                        let _ = wakeups.send(task_id);
                    }
                }
                tracing::warn!(server = %label, %channel, "wake-up subscription lost; reconnecting (polling continues)");
            }
            Err(reason) => {
                tracing::warn!(
                    server = %label,
                    %channel,
                    reason = %label.scrub(&reason),
                    retry_in_ms = backoff.as_millis() as u64,
                    "cannot subscribe to wake-ups; polling continues"
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
    connection_timeout: Duration,
) -> Result<redis::aio::PubSub, String> {
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(connection_timeout * 2, connect).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} ms", (connection_timeout * 2).as_millis())),
    }
}
