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
use tokio::sync::watch;

use crate::config::ClusterConfig;
use crate::sync::lock;

/// How long a Redis call may take before the request that needs it gets a
/// 503: Redis on the same network answers in a millisecond.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) struct Cluster {
    conn: ConnectionManager,
    namespace: String,
    pub(crate) lease: Duration,
    /// Identifies this instance as the holder of leases.
    pub(crate) instance: String,
    waiters: Arc<Waiters>,
}

/// Local interest in channels: a change counter per channel someone waits
/// on. A counter rather than a `Notify`: a watcher remembers the count it
/// last saw, so a change that lands between its look at the state and its
/// wait still wakes it (a `Notify` wakes only those already waiting).
#[derive(Default)]
struct Waiters {
    channels: Mutex<HashMap<String, (watch::Sender<u64>, usize)>>,
}

/// Interest in one channel; dropping it withdraws the interest.
pub(crate) struct Watch {
    waiters: Arc<Waiters>,
    channel: String,
    changes: watch::Receiver<u64>,
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
    pub(crate) async fn connect(config: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
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
            instance: hex::encode(id),
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
    pub(crate) fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{id}", self.namespace)
    }

    /// The channel on which changes to `key` are announced.
    pub(crate) fn channel(&self, key: &str) -> String {
        format!("{}:events:{key}", self.namespace)
    }

    /// A connection handle for commands (cheap to clone; reconnects).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Starts watching `channel`; watch before reading the state, so a
    /// change between the read and the wait is not missed.
    pub(crate) fn watch(&self, channel: String) -> Watch {
        Waiters::watch(&self.waiters, channel)
    }
}

impl Waiters {
    fn watch(waiters: &Arc<Waiters>, channel: String) -> Watch {
        let changes = {
            let mut channels = lock(&waiters.channels);
            let entry = channels
                .entry(channel.clone())
                .or_insert_with(|| (watch::channel(0).0, 0));
            entry.1 += 1;
            // Marks the count now as seen: only later changes wake it.
            entry.0.subscribe()
        };
        Watch {
            waiters: Arc::clone(waiters),
            channel,
            changes,
        }
    }

    /// Counts a change on `channel`, waking its watchers (now or when they
    /// next wait).
    fn changed(&self, channel: &str) {
        if let Some((changes, _)) = lock(&self.channels).get(channel) {
            changes.send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    /// Counts a change on every channel: messages may have been missed.
    fn all_changed(&self) {
        for (changes, _) in lock(&self.channels).values() {
            changes.send_modify(|count| *count = count.wrapping_add(1));
        }
    }
}

impl Watch {
    /// Waits for a change on the channel since the last look (which may
    /// have happened already), or `recheck` at the latest.
    pub(crate) async fn changed(&mut self, recheck: Duration) {
        let _ = tokio::time::timeout(recheck, self.changes.changed()).await;
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

/// The shared store could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[error("the shared store is unavailable: {0}")]
pub struct StoreError(pub(crate) String);

/// Any Redis failure, as the store reports it.
pub(crate) fn unavailable(e: redis::RedisError) -> StoreError {
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
                    waiters.all_changed();
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        waiters.changed(message.get_channel_name());
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// A change that lands after a waiter looked at the state but before it
    /// waits must still wake it at once, not after the recheck interval.
    #[tokio::test]
    async fn a_change_between_look_and_wait_is_not_lost() {
        let waiters = Arc::new(Waiters::default());
        let mut watch = Waiters::watch(&waiters, "job-1".to_owned());
        // ... the waiter reads the store here and finds nothing yet ...
        waiters.changed("job-1");
        let woke = watch.changed(Duration::from_secs(60)).now_or_never();
        assert!(woke.is_some(), "the change was lost until the recheck");
        // Seen now: the next wait waits for the next change.
        assert!(watch
            .changed(Duration::from_secs(60))
            .now_or_never()
            .is_none());
        waiters.all_changed();
        assert!(watch
            .changed(Duration::from_secs(60))
            .now_or_never()
            .is_some());
    }

    #[tokio::test]
    async fn changes_elsewhere_do_not_wake_a_watcher() {
        let waiters = Arc::new(Waiters::default());
        let mut watch = Waiters::watch(&waiters, "job-1".to_owned());
        waiters.changed("job-2");
        assert!(watch
            .changed(Duration::from_secs(60))
            .now_or_never()
            .is_none());
        drop(watch);
        assert!(lock(&waiters.channels).is_empty(), "interest withdrawn");
    }
}
