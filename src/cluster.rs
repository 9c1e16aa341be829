//! Redis as the shared engine of many Baton instances: one multiplexed
//! command connection that reconnects on its own, and one pub/sub
//! subscription that wakes local waiters when another instance changes
//! something they wait on.
//!
//! Wake-ups are hints, not data: a waiter that is woken re-reads the state
//! it waits on from Redis, and also re-reads it now and then unwoken, so a
//! message lost while the subscription reconnects delays an answer but
//! never loses it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use tokio::sync::Notify;

use crate::config::ClusterConfig;
use crate::idempotency::StoreError;
use crate::sync::lock;

/// How long a Redis call may take before the request that needs it gets a
/// 503: Redis on the same network answers in a millisecond.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Cluster {
    conn: ConnectionManager,
    namespace: String,
    pub lease: Duration,
    /// Identifies this instance as the holder of leases.
    pub instance: String,
    waiters: Arc<Waiters>,
}

/// Local interest in channels: one `Notify` per channel someone waits on.
#[derive(Default)]
struct Waiters {
    channels: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

/// Interest in one channel; dropping it withdraws the interest.
pub struct Watch {
    waiters: Arc<Waiters>,
    channel: String,
    notify: Arc<Notify>,
}

#[derive(Debug, thiserror::Error)]
#[error("cluster Redis at {url} is unreachable: {source}")]
pub struct ClusterError {
    url: String,
    #[source]
    source: redis::RedisError,
}

impl Cluster {
    /// Connects, checks that Redis answers, and starts the subscription.
    pub async fn connect(config: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let fail = |source| ClusterError {
            url: config.redis.clone(),
            source,
        };
        let client = redis::Client::open(config.redis.as_str()).map_err(fail)?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(1000);
        let mut conn = tokio::time::timeout(
            CALL_TIMEOUT * 3,
            client.get_connection_manager_with_config(settings),
        )
        .await
        .map_err(|_| {
            fail(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "connect timed out",
            )))
        })?
        .map_err(fail)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(fail)?;
        // Instances tell their claims apart by this id: a zero one shared
        // by two instances would let each take the other's jobs.
        let mut id = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id).map_err(
            |_| {
                fail(redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "no system randomness for the instance id",
                )))
            },
        )?;
        let cluster = Arc::new(Cluster {
            conn,
            namespace: config.namespace.clone(),
            lease: config.lease,
            instance: crate::hex::encode(&id),
            waiters: Arc::default(),
        });
        tokio::spawn(subscribe(
            client,
            format!("{}:events:*", config.namespace),
            Arc::clone(&cluster.waiters),
        ));
        Ok(cluster)
    }

    /// A key in this deployment's namespace.
    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.namespace)
    }

    /// The channel on which changes to `key` are announced.
    pub fn channel(&self, key: &str) -> String {
        format!("{}:events:{key}", self.namespace)
    }

    /// A connection handle for commands (cheap to clone; reconnects).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Starts watching `channel`; watch before reading the state, so a
    /// change between the read and the wait is not missed.
    pub fn watch(&self, channel: String) -> Watch {
        let notify = {
            let mut channels = lock(&self.waiters.channels);
            let entry = channels
                .entry(channel.clone())
                .or_insert_with(|| (Arc::new(Notify::new()), 0));
            entry.1 += 1;
            Arc::clone(&entry.0)
        };
        Watch {
            waiters: Arc::clone(&self.waiters),
            channel,
            notify,
        }
    }

    /// Tells every instance watching `channel` that something changed.
    pub async fn announce(&self, channel: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let _: i64 = conn
            .publish(channel, "changed")
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

impl Watch {
    /// Waits for a change on the channel, or `recheck` at the latest.
    pub async fn changed(&self, recheck: Duration) {
        let _ = tokio::time::timeout(recheck, self.notify.notified()).await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut channels = lock(&self.waiters.channels);
        if let Some(entry) = channels.get_mut(&self.channel) {
            entry.1 -= 1;
            if entry.1 == 0 {
                channels.remove(&self.channel);
            }
        }
    }
}

/// Any Redis failure, as the store reports it.
pub fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError(e.to_string())
}

/// Keeps one pattern subscription alive for the life of the process,
/// reconnecting with backoff, and wakes local waiters on each message.
async fn subscribe(client: redis::Client, pattern: String, waiters: Arc<Waiters>) {
    use futures_util::StreamExt;
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.psubscribe(&pattern).await.is_ok() {
                    backoff = Duration::from_millis(100);
                    // Whatever was published while we were away is lost:
                    // have everyone look again.
                    wake_all(&waiters);
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let channel = message.get_channel_name();
                        if let Some((notify, _)) = lock(&waiters.channels).get(channel) {
                            notify.notify_waiters();
                        }
                    }
                }
                tracing::warn!("cluster subscription lost; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "cluster subscription failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn wake_all(waiters: &Waiters) {
    for (notify, _) in lock(&waiters.channels).values() {
        notify.notify_waiters();
    }
}
