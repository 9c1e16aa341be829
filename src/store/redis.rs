//! The idempotency store shared by many instances, in Redis.
//!
//! A record (`{ns}:idem:{key}`, a hash) holds the request's fingerprint,
//! its state, the job once accepted and the final answer once there is
//! one; it lives for the key's TTL. Leading is a separate lease
//! (`{ns}:lease:{key}`, `SET NX` with a short TTL) that the leader renews
//! while it follows the job: an instance that dies leaves no permanent
//! lock, and the first retry after its lease runs out resumes the job it
//! had submitted. Changes are announced on `{ns}:events:…`, which wakes
//! waiters on every instance.
//!
//! Every step that reads a record and then changes it is one Lua script,
//! so Redis runs it whole: two instances claiming one key at the same
//! moment cannot both lead, and a leader that lost its lease cannot
//! overwrite the state of the instance that took over.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use redis::Script;
use serde::{Deserialize, Serialize};

use super::Ticket;
use super::{Begin, BoxFuture, Fingerprint, Store, StoreError, StoreResult, Stored};
use crate::cluster::{unavailable, Cluster};
use crate::sync::lock;

pub(crate) struct RedisStore {
    cluster: Arc<Cluster>,
    /// The keys this instance leads: the fingerprint it claimed each with,
    /// and the task renewing its lease.
    leading: Mutex<HashMap<String, Leading>>,
}

struct Leading {
    fingerprint: String,
    renewal: tokio::task::AbortHandle,
}

/// A kept answer, as the `answer` field of a record.
#[derive(Serialize, Deserialize)]
struct Answer {
    status: u16,
    /// Name and base64 value pairs, in order.
    headers: Vec<(String, String)>,
    body: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    too_large: Option<usize>,
}

/// Claims a key. KEYS: record, lease. ARGV: fingerprint, record TTL ms,
/// instance, lease ms. A new record and its lease are made together; an
/// existing one is led by whoever takes its free lease first.
static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local fp = redis.call('hget', KEYS[1], 'fp')
if not fp then
  redis.call('del', KEYS[1])
  redis.call('hset', KEYS[1], 'fp', ARGV[1], 'state', 'leading')
  redis.call('pexpire', KEYS[1], ARGV[2])
  redis.call('set', KEYS[2], ARGV[3], 'PX', ARGV[4])
  return {'lead'}
end
if fp ~= ARGV[1] then return {'mismatch'} end
if redis.call('hget', KEYS[1], 'state') == 'finished' then
  return {'replay', redis.call('hget', KEYS[1], 'answer')}
end
if not redis.call('set', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return {'wait'}
end
redis.call('hset', KEYS[1], 'state', 'leading')
local ticket = redis.call('hget', KEYS[1], 'ticket')
if ticket then return {'resume', ticket} end
return {'lead'}
",
    )
});

/// What a waiter sees. KEYS: record, lease.
static LOOK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local state = redis.call('hget', KEYS[1], 'state')
if state == 'finished' then
  return {'replay', redis.call('hget', KEYS[1], 'answer')}
end
if state == 'leading' and redis.call('exists', KEYS[2]) == 1 then
  return {'wait'}
end
return {'again'}
",
    )
});

/// Whether this instance may still change the record it led: the record
/// is the one it claimed (same fingerprint: not a later request's that
/// reused the key after it expired), and no other instance has taken the
/// lease over. KEYS: record, lease. ARGV[1]: fingerprint, ARGV[2]: instance.
const MINE: &str = r"
local function mine()
  if redis.call('hget', KEYS[1], 'fp') ~= ARGV[1] then return false end
  local holder = redis.call('get', KEYS[2])
  return not holder or holder == ARGV[2]
end
";

/// Notes the leader's job. ARGV[3]: ticket.
static SUBMITTED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{MINE}
if not mine() or redis.call('hget', KEYS[1], 'state') ~= 'leading' then return 0 end
return redis.call('hset', KEYS[1], 'ticket', ARGV[3])
"
    ))
});

/// Keeps the final answer and lets go of the lease. ARGV[3]: answer,
/// ARGV[4]: channel.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{MINE}
if not mine() then return 0 end
redis.call('hset', KEYS[1], 'state', 'finished', 'answer', ARGV[3])
redis.call('del', KEYS[2])
redis.call('publish', ARGV[4], 'changed')
return 1
"
    ))
});

/// Lets go without an answer: a submitted job stays for the next retry,
/// a record whose request never became a job is forgotten. ARGV[3]:
/// channel.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{MINE}
if not mine() then return 0 end
if redis.call('hget', KEYS[1], 'state') == 'leading' then
  if redis.call('hexists', KEYS[1], 'ticket') == 1 then
    redis.call('hset', KEYS[1], 'state', 'detached')
  else
    redis.call('del', KEYS[1])
  end
end
redis.call('del', KEYS[2])
redis.call('publish', ARGV[3], 'changed')
return 1
"
    ))
});

/// Renews a lease only while this instance still holds it.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end",
    )
});

impl RedisStore {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Self {
        RedisStore {
            cluster,
            leading: Mutex::default(),
        }
    }

    fn keys(&self, key: &str) -> Keys {
        Keys::of(&self.cluster, key)
    }

    fn lease_ms(&self) -> u64 {
        millis(self.cluster.lease)
    }

    /// Keeps renewing the lease on `key` while this instance leads it.
    fn lead(&self, key: &str, fingerprint: String) {
        let mut conn = self.cluster.conn();
        let lease_key = self.keys(key).lease;
        let instance = self.cluster.instance.clone();
        let lease = self.cluster.lease;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let renewed: redis::RedisResult<i64> = RENEW
                    .key(&lease_key)
                    .arg(&instance)
                    .arg(millis(lease))
                    .invoke_async(&mut conn)
                    .await;
                if matches!(renewed, Ok(0)) {
                    return; // Someone else holds it now.
                }
            }
        });
        let leading = Leading {
            fingerprint,
            renewal: task.abort_handle(),
        };
        if let Some(old) = lock(&self.leading).insert(key.to_owned(), leading) {
            old.renewal.abort();
        }
    }

    /// Stops leading `key`; the fingerprint it was claimed with, if this
    /// instance led it.
    fn stop_leading(&self, key: &str) -> Option<String> {
        let leading = lock(&self.leading).remove(key)?;
        leading.renewal.abort();
        Some(leading.fingerprint)
    }

    /// The fingerprint this instance leads `key` with.
    fn fingerprint(&self, key: &str) -> Option<String> {
        lock(&self.leading).get(key).map(|l| l.fingerprint.clone())
    }
}

/// The Redis keys of one idempotency key, and its channel.
struct Keys {
    record: String,
    lease: String,
    channel: String,
}

impl Keys {
    fn of(cluster: &Cluster, key: &str) -> Keys {
        let record = cluster.key("idem", key);
        Keys {
            channel: cluster.channel(&record),
            lease: cluster.key("lease", key),
            record,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn hex(fp: &Fingerprint) -> String {
    hex::encode(fp.0)
}

fn encode(stored: &Stored) -> StoreResult<String> {
    let answer = match stored {
        Stored::Answer {
            status,
            headers,
            body,
        } => Answer {
            status: status.as_u16(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), STANDARD.encode(v.as_bytes())))
                .collect(),
            body: STANDARD.encode(body),
            too_large: None,
        },
        Stored::TooLarge { status, limit } => Answer {
            status: status.as_u16(),
            headers: Vec::new(),
            body: String::new(),
            too_large: Some(*limit),
        },
    };
    serde_json::to_string(&answer).map_err(|e| StoreError(e.to_string()))
}

fn decode(answer: Option<&String>) -> StoreResult<Stored> {
    let corrupt = |what: &str| StoreError(format!("a corrupt stored answer: {what}"));
    let answer: Answer = serde_json::from_str(answer.ok_or_else(|| corrupt("missing"))?)
        .map_err(|e| corrupt(&e.to_string()))?;
    let status = StatusCode::from_u16(answer.status).map_err(|_| corrupt("status"))?;
    if let Some(limit) = answer.too_large {
        return Ok(Stored::TooLarge { status, limit });
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &answer.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| corrupt("header name"))?;
        let value = STANDARD
            .decode(value)
            .map_err(|_| corrupt("header value"))?;
        let value = HeaderValue::from_bytes(&value).map_err(|_| corrupt("header value"))?;
        headers.append(name, value);
    }
    let body = STANDARD.decode(&answer.body).map_err(|_| corrupt("body"))?;
    Ok(Stored::Answer {
        status,
        headers,
        body: Bytes::from(body),
    })
}

/// What a waiter sees when it looks.
enum Look {
    Answer(Arc<Stored>),
    /// The leader let go or vanished: begin again.
    Again,
    Wait,
}

async fn look(cluster: &Cluster, keys: &Keys) -> StoreResult<Look> {
    let reply: Vec<String> = LOOK
        .key(&keys.record)
        .key(&keys.lease)
        .invoke_async(&mut cluster.conn())
        .await
        .map_err(unavailable)?;
    match reply.first().map(String::as_str) {
        Some("replay") => Ok(Look::Answer(Arc::new(decode(reply.get(1))?))),
        Some("wait") => Ok(Look::Wait),
        _ => Ok(Look::Again),
    }
}

impl Store for RedisStore {
    fn begin(
        &self,
        key: &str,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Begin>> {
        let key = key.to_owned();
        Box::pin(async move {
            let keys = self.keys(&key);
            let reply: Vec<String> = BEGIN
                .key(&keys.record)
                .key(&keys.lease)
                .arg(hex(&fingerprint))
                .arg(millis(ttl))
                .arg(&self.cluster.instance)
                .arg(self.lease_ms())
                .invoke_async(&mut self.cluster.conn())
                .await
                .map_err(unavailable)?;
            match reply.first().map(String::as_str) {
                Some("lead") => {
                    self.lead(&key, hex(&fingerprint));
                    Ok(Begin::Lead)
                }
                Some("resume") => {
                    let ticket = reply
                        .get(1)
                        .and_then(|t| serde_json::from_str(t).ok())
                        .ok_or_else(|| StoreError("a corrupt stored job".to_owned()))?;
                    self.lead(&key, hex(&fingerprint));
                    Ok(Begin::Resume(ticket))
                }
                Some("mismatch") => Ok(Begin::Mismatch),
                Some("replay") => Ok(Begin::Replay(Arc::new(decode(reply.get(1))?))),
                Some("wait") => {
                    let cluster = Arc::clone(&self.cluster);
                    Ok(Begin::Wait(Box::pin(async move {
                        // Watch before looking, so a change in between wakes us.
                        let mut watch = cluster.watch(keys.channel.clone());
                        loop {
                            match look(&cluster, &keys).await {
                                Ok(Look::Answer(answer)) => return Some(answer),
                                Ok(Look::Again) | Err(_) => return None,
                                Ok(Look::Wait) => watch.changed(cluster.lease / 2).await,
                            }
                        }
                    })))
                }
                _ => Err(StoreError(format!("an unexpected claim reply {reply:?}"))),
            }
        })
    }

    fn submitted(&self, key: &str, ticket: Ticket) -> BoxFuture<'_, StoreResult<()>> {
        let key = key.to_owned();
        Box::pin(async move {
            let Some(fingerprint) = self.fingerprint(&key) else {
                return Ok(()); // Not led here.
            };
            let keys = self.keys(&key);
            let ticket = serde_json::to_string(&ticket).map_err(|e| StoreError(e.to_string()))?;
            let _: i64 = SUBMITTED
                .key(&keys.record)
                .key(&keys.lease)
                .arg(fingerprint)
                .arg(&self.cluster.instance)
                .arg(ticket)
                .invoke_async(&mut self.cluster.conn())
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn complete(&self, key: &str, answer: Stored) -> BoxFuture<'_, StoreResult<()>> {
        let key = key.to_owned();
        Box::pin(async move {
            let Some(fingerprint) = self.stop_leading(&key) else {
                return Ok(());
            };
            let keys = self.keys(&key);
            let _: i64 = COMPLETE
                .key(&keys.record)
                .key(&keys.lease)
                .arg(fingerprint)
                .arg(&self.cluster.instance)
                .arg(encode(&answer)?)
                .arg(&keys.channel)
                .invoke_async(&mut self.cluster.conn())
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn release(&self, key: &str) -> BoxFuture<'_, StoreResult<()>> {
        let key = key.to_owned();
        Box::pin(async move {
            let Some(fingerprint) = self.stop_leading(&key) else {
                return Ok(());
            };
            let keys = self.keys(&key);
            let _: i64 = RELEASE
                .key(&keys.record)
                .key(&keys.lease)
                .arg(fingerprint)
                .arg(&self.cluster.instance)
                .arg(&keys.channel)
                .invoke_async(&mut self.cluster.conn())
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    /// The keys this instance leads now; the whole store is in Redis.
    fn len(&self) -> usize {
        lock(&self.leading).len()
    }

    /// Redis evicts by its own policy, unseen here.
    fn evictions(&self) -> u64 {
        0
    }
}
