//! The idempotency store shared by many instances, in Redis.
//!
//! A record (`{ns}:idem:{key}`) holds the request's fingerprint, the job
//! once accepted, and the final answer once there is one; it lives for the
//! key's TTL. Leading is a separate lease (`{ns}:lease:{key}`, `SET NX`
//! with a short TTL) that the leader renews while it follows the job: an
//! instance that dies leaves no permanent lock, and the first retry after
//! its lease runs out resumes the job it had submitted. Changes are
//! announced on `{ns}:events:…`, which wakes waiters on every instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{Begin, BoxFuture, Fingerprint, Store, StoreError, StoreResult, Stored};
use crate::cluster::{unavailable, Cluster};
use crate::job::continuation::Ticket;
use crate::sync::lock;

pub struct RedisStore {
    cluster: Arc<Cluster>,
    /// Lease renewals of the keys this instance leads.
    renewals: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    fp: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    ticket: Option<Ticket>,
    /// `leading`, `detached` or `finished`.
    state: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    answer: Option<Answer>,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    status: u16,
    /// Name and base64 value pairs, in order.
    headers: Vec<(String, String)>,
    body: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    too_large: Option<usize>,
}

/// Renews a lease only while this instance still holds it.
const RENEW: &str = r"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

impl RedisStore {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        RedisStore {
            cluster,
            renewals: Mutex::default(),
        }
    }

    fn record_key(&self, key: &str) -> String {
        self.cluster.key("idem", key)
    }

    fn lease_key(&self, key: &str) -> String {
        self.cluster.key("lease", key)
    }

    fn lease_ms(&self) -> u64 {
        self.cluster.lease.as_millis().max(1) as u64
    }

    async fn read(conn: &mut ConnectionManager, record_key: &str) -> StoreResult<Option<Record>> {
        let raw: Option<String> = conn.get(record_key).await.map_err(unavailable)?;
        raw.map(|r| {
            serde_json::from_str(&r).map_err(|e| StoreError(format!("a corrupt record: {e}")))
        })
        .transpose()
    }

    async fn write(
        &self,
        conn: &mut ConnectionManager,
        key: &str,
        record: &Record,
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        let text = serde_json::to_string(record).map_err(|e| StoreError(e.to_string()))?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.record_key(key)).arg(text);
        match ttl {
            Some(ttl) => cmd.arg("PX").arg(ttl.as_millis().max(1) as u64),
            None => cmd.arg("KEEPTTL"),
        };
        let _: Option<String> = cmd.query_async(conn).await.map_err(unavailable)?;
        Ok(())
    }

    /// Takes the lease if nobody holds it, and keeps renewing it.
    async fn take_lease(&self, conn: &mut ConnectionManager, key: &str) -> StoreResult<bool> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.lease_key(key))
            .arg(&self.cluster.instance)
            .arg("NX")
            .arg("PX")
            .arg(self.lease_ms())
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        if taken.is_some() {
            self.renew(key);
        }
        Ok(taken.is_some())
    }

    fn renew(&self, key: &str) {
        let mut conn = self.cluster.conn();
        let lease_key = self.lease_key(key);
        let instance = self.cluster.instance.clone();
        let lease = self.cluster.lease;
        let task = tokio::spawn(async move {
            let script = redis::Script::new(RENEW);
            loop {
                tokio::time::sleep(lease / 3).await;
                let renewed: RedisResultInt = script
                    .key(&lease_key)
                    .arg(&instance)
                    .arg(lease.as_millis().max(1) as u64)
                    .invoke_async(&mut conn)
                    .await;
                if matches!(renewed, Ok(0)) {
                    return; // Someone else holds it now.
                }
            }
        });
        if let Some(old) = lock(&self.renewals).insert(key.to_owned(), task.abort_handle()) {
            old.abort();
        }
    }

    /// Stops leading `key`: no more renewals, and the lease is gone.
    async fn drop_lease(&self, conn: &mut ConnectionManager, key: &str) -> StoreResult<()> {
        if let Some(task) = lock(&self.renewals).remove(key) {
            task.abort();
        }
        let _: i64 = conn.del(self.lease_key(key)).await.map_err(unavailable)?;
        Ok(())
    }
}

type RedisResultInt = redis::RedisResult<i64>;

fn hex(fp: &Fingerprint) -> String {
    crate::hex::encode(&fp.0)
}

fn encode(stored: &Stored) -> Answer {
    match stored {
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
    }
}

fn decode(answer: &Answer) -> StoreResult<Stored> {
    let corrupt = |what: &str| StoreError(format!("a corrupt stored answer: {what}"));
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

async fn look(cluster: &Cluster, key: &str) -> StoreResult<Look> {
    let mut conn = cluster.conn();
    let Some(record) = RedisStore::read(&mut conn, &cluster.key("idem", key)).await? else {
        return Ok(Look::Again);
    };
    match (record.state.as_str(), &record.answer) {
        ("finished", Some(answer)) => Ok(Look::Answer(Arc::new(decode(answer)?))),
        ("leading", _) => {
            let leased: bool = conn
                .exists(cluster.key("lease", key))
                .await
                .map_err(unavailable)?;
            Ok(if leased { Look::Wait } else { Look::Again })
        }
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
            let mut conn = self.cluster.conn();
            let fp = hex(&fingerprint);
            // A few rounds at most: each one loses a race to another
            // instance that then holds the key.
            for _ in 0..5 {
                let Some(mut record) = Self::read(&mut conn, &self.record_key(&key)).await? else {
                    let fresh = Record {
                        fp: fp.clone(),
                        ticket: None,
                        state: "leading".to_owned(),
                        answer: None,
                    };
                    let text =
                        serde_json::to_string(&fresh).map_err(|e| StoreError(e.to_string()))?;
                    let created: Option<String> = redis::cmd("SET")
                        .arg(self.record_key(&key))
                        .arg(text)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl.as_millis().max(1) as u64)
                        .query_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    if created.is_some() {
                        // A stale lease of a forgotten record must not block us.
                        let _: i64 = conn.del(self.lease_key(&key)).await.map_err(unavailable)?;
                        self.take_lease(&mut conn, &key).await?;
                        return Ok(Begin::Lead);
                    }
                    continue;
                };
                if record.fp != fp {
                    return Ok(Begin::Mismatch);
                }
                if let ("finished", Some(answer)) = (record.state.as_str(), record.answer.as_ref())
                {
                    return Ok(Begin::Replay(Arc::new(decode(answer)?)));
                }
                // Leading with a live lease: wait. Detached, or a leader
                // whose lease ran out (its instance died): take over.
                if !self.take_lease(&mut conn, &key).await? {
                    let cluster = Arc::clone(&self.cluster);
                    let key = key.clone();
                    return Ok(Begin::Wait(Box::pin(async move {
                        let watch = cluster.watch(cluster.channel(&cluster.key("idem", &key)));
                        loop {
                            match look(&cluster, &key).await {
                                Ok(Look::Answer(answer)) => return Some(answer),
                                Ok(Look::Again) | Err(_) => return None,
                                Ok(Look::Wait) => watch.changed(cluster.lease / 2).await,
                            }
                        }
                    })));
                }
                record.state = "leading".to_owned();
                self.write(&mut conn, &key, &record, None).await?;
                return Ok(match record.ticket {
                    Some(ticket) => Begin::Resume(ticket),
                    // The leader died between sending its submit and
                    // learning the job: whether the job exists is unknown.
                    // The client retried, so it runs again.
                    None => Begin::Lead,
                });
            }
            Err(StoreError(
                "the idempotency key is contended; try again".to_owned(),
            ))
        })
    }

    fn submitted(&self, key: &str, ticket: Ticket) -> BoxFuture<'_, StoreResult<()>> {
        let key = key.to_owned();
        Box::pin(async move {
            let mut conn = self.cluster.conn();
            if let Some(mut record) = Self::read(&mut conn, &self.record_key(&key)).await? {
                if record.state == "leading" {
                    record.ticket = Some(ticket);
                    self.write(&mut conn, &key, &record, None).await?;
                }
            }
            Ok(())
        })
    }

    fn complete(&self, key: &str, answer: Stored) -> BoxFuture<'_, StoreResult<()>> {
        let key = key.to_owned();
        Box::pin(async move {
            let mut conn = self.cluster.conn();
            if let Some(mut record) = Self::read(&mut conn, &self.record_key(&key)).await? {
                record.state = "finished".to_owned();
                record.answer = Some(encode(&answer));
                self.write(&mut conn, &key, &record, None).await?;
            }
            self.drop_lease(&mut conn, &key).await?;
            self.cluster
                .announce(&self.cluster.channel(&self.record_key(&key)))
                .await
        })
    }

    fn release(&self, key: &str) -> BoxFuture<'_, StoreResult<()>> {
        let key = key.to_owned();
        Box::pin(async move {
            let mut conn = self.cluster.conn();
            if let Some(mut record) = Self::read(&mut conn, &self.record_key(&key)).await? {
                if record.state == "leading" {
                    if record.ticket.is_some() {
                        record.state = "detached".to_owned();
                        self.write(&mut conn, &key, &record, None).await?;
                    } else {
                        let _: i64 = conn.del(self.record_key(&key)).await.map_err(unavailable)?;
                    }
                }
            }
            self.drop_lease(&mut conn, &key).await?;
            self.cluster
                .announce(&self.cluster.channel(&self.record_key(&key)))
                .await
        })
    }

    /// The keys this instance leads now; the whole store is in Redis.
    fn len(&self) -> usize {
        lock(&self.renewals).len()
    }

    /// Redis evicts by its own policy, unseen here.
    fn evictions(&self) -> u64 {
        0
    }
}
