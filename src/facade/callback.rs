//! Completion by callback (dialect F): Baton gives the job API a URL of its
//! callback listener, carrying a single-use token, and the job API POSTs
//! the job's outcome there.
//!
//! A token is 128 random bits, registered before the submit is sent, so a
//! callback that beats the submit's own answer is kept, not lost. With a
//! cluster the token lives in Redis too: the instance that receives the
//! callback stores it there and announces it, and the instance holding the
//! client picks it up. A token that is unknown, already used, or whose
//! callback is not properly signed is answered 404 and changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use redis::AsyncCommands;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::{unavailable, Cluster};
use crate::config::Callback;
use crate::store::{StoreError, StoreResult};

/// Where the callback listener takes callbacks.
pub(crate) const PATH: &str = "/callbacks/";

/// A callback's largest accepted body.
pub(crate) const MAX_BODY: usize = 16 * 1024 * 1024;

/// What a job API called back with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Delivery {
    pub(crate) status: u16,
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    /// Base64, so any body survives the trip through Redis.
    pub(crate) body: String,
}

impl Delivery {
    pub(crate) fn body(&self) -> Bytes {
        STANDARD
            .decode(&self.body)
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

/// A pending callback in Redis: which route it belongs to (for the
/// signature check on whichever instance receives it).
#[derive(Serialize, Deserialize)]
struct Pending {
    route: String,
    #[serde(default)]
    delivery: Option<Delivery>,
}

type Slot = watch::Sender<Option<Arc<Delivery>>>;

/// A token this instance handed out.
struct Entry {
    route: String,
    slot: Slot,
    /// Until when a callback is taken, whether or not a request still
    /// waits for it: one that comes after the request stopped waiting is
    /// kept for the next request for the job (an idempotent retry, a
    /// continuation monitor).
    expires: Instant,
}

/// The callbacks this instance waits for, and the cluster's.
pub(crate) struct Callbacks {
    local: Mutex<Local>,
    cluster: Option<Arc<Cluster>>,
    random: SystemRandom,
}

#[derive(Default)]
struct Local {
    entries: HashMap<String, Entry>,
    /// When expired entries were last dropped.
    swept: Option<Instant>,
}

/// How often expired tokens are looked for, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// One awaited callback. Dropping it forgets the token once its callback
/// came; before that, the token stays until it expires.
pub(crate) struct Registration {
    pub(crate) token: String,
    receiver: watch::Receiver<Option<Arc<Delivery>>>,
    callbacks: Arc<Callbacks>,
}

/// Stores a delivery only if its token is still pending.
const DELIVER: &str = r"if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('set', KEYS[1], ARGV[2], 'KEEPTTL') redis.call('publish', KEYS[2], 'changed') return 1 else return 0 end";

impl Callbacks {
    pub(crate) fn new(cluster: Option<Arc<Cluster>>) -> Self {
        Callbacks {
            local: Mutex::default(),
            cluster,
            random: SystemRandom::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        crate::sync::lock(&self.local)
    }

    /// A fresh token for `route`, kept for `ttl`: awaited through the
    /// registration, and after it drops, for the next request for the job.
    pub(crate) async fn register(
        self: &Arc<Self>,
        route: &str,
        ttl: Duration,
    ) -> StoreResult<Registration> {
        let mut bytes = [0u8; 16];
        self.random
            .fill(&mut bytes)
            .map_err(|_| StoreError("no system randomness for a callback token".to_owned()))?;
        let token = hex::encode(bytes);
        if let Some(cluster) = &self.cluster {
            let pending = serde_json::to_string(&Pending {
                route: route.to_owned(),
                delivery: None,
            })
            .map_err(|e| StoreError(e.to_string()))?;
            let mut conn = cluster.conn();
            let _: () = conn
                .set_ex(
                    cluster.key("callback", &token),
                    pending,
                    ttl.as_secs().max(1),
                )
                .await
                .map_err(unavailable)?;
        }
        let now = Instant::now();
        let (slot, receiver) = watch::channel(None);
        let mut local = self.lock();
        if local.swept.is_none_or(|at| now - at >= SWEEP_EVERY) {
            local.entries.retain(|_, entry| entry.expires > now);
            local.swept = Some(now);
        }
        let entry = Entry {
            route: route.to_owned(),
            slot,
            expires: now + ttl,
        };
        local.entries.insert(token.clone(), entry);
        Ok(Registration {
            token,
            receiver,
            callbacks: Arc::clone(self),
        })
    }

    /// Waits again for a token handed out earlier (for a request that
    /// resumes a job): `None` if it expired, or is not `route`'s.
    pub(crate) async fn attach(self: &Arc<Self>, token: &str, route: &str) -> Option<Registration> {
        let now = Instant::now();
        let local = self.lock().entries.get(token).and_then(|entry| {
            (entry.expires > now && entry.route == route).then(|| entry.slot.subscribe())
        });
        let receiver = match local {
            Some(receiver) => receiver,
            None => {
                // Handed out by another instance, or before a restart: the
                // cluster has it, and `arrived` looks there.
                let cluster = self.cluster.as_ref()?;
                let stored: Option<String> = cluster
                    .conn()
                    .get(cluster.key("callback", token))
                    .await
                    .ok()?;
                let pending = serde_json::from_str::<Pending>(&stored?).ok()?;
                if pending.route != route {
                    return None;
                }
                let (slot, receiver) = watch::channel(pending.delivery.map(Arc::new));
                let entry = Entry {
                    route: route.to_owned(),
                    slot,
                    expires: now + SWEEP_EVERY,
                };
                self.lock().entries.insert(token.to_owned(), entry);
                receiver
            }
        };
        Some(Registration {
            token: token.to_owned(),
            receiver,
            callbacks: Arc::clone(self),
        })
    }

    /// The route a token was handed out for, if it is still pending.
    pub(crate) async fn route_of(&self, token: &str) -> StoreResult<Option<String>> {
        if let Some(entry) = self.lock().entries.get(token) {
            let pending = entry.slot.borrow().is_none() && entry.expires > Instant::now();
            return Ok(pending.then(|| entry.route.clone()));
        }
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let stored: Option<String> = cluster
            .conn()
            .get(cluster.key("callback", token))
            .await
            .map_err(unavailable)?;
        Ok(stored
            .and_then(|s| serde_json::from_str::<Pending>(&s).ok())
            .filter(|p| p.delivery.is_none())
            .map(|p| p.route))
    }

    /// Hands a callback to whoever waits for `token`, once. False: the
    /// token is unknown or was used already.
    pub(crate) async fn deliver(
        &self,
        token: &str,
        route: &str,
        delivery: Delivery,
    ) -> StoreResult<bool> {
        if let Some(cluster) = &self.cluster {
            // Marked used cluster-wide, so no instance takes it twice.
            return self.deliver_shared(cluster, token, route, delivery).await;
        }
        let Some(slot) = self.lock().entries.get(token).map(|e| e.slot.clone()) else {
            return Ok(false);
        };
        let mut fresh = false;
        slot.send_if_modified(|current| {
            fresh = current.is_none();
            if fresh {
                *current = Some(Arc::new(delivery));
            }
            fresh
        });
        Ok(fresh)
    }

    async fn deliver_shared(
        &self,
        cluster: &Cluster,
        token: &str,
        route: &str,
        delivery: Delivery,
    ) -> StoreResult<bool> {
        let json = |delivery| {
            serde_json::to_string(&Pending {
                route: route.to_owned(),
                delivery,
            })
            .map_err(|e| StoreError(e.to_string()))
        };
        let key = cluster.key("callback", token);
        let delivered: i64 = redis::Script::new(DELIVER)
            .key(&key)
            .key(cluster.channel(&key))
            .arg(json(None)?)
            .arg(json(Some(delivery.clone()))?)
            .invoke_async(&mut cluster.conn())
            .await
            .map_err(unavailable)?;
        if delivered == 1 {
            if let Some(entry) = self.lock().entries.get(token) {
                entry.slot.send_replace(Some(Arc::new(delivery)));
            }
        }
        Ok(delivered == 1)
    }
}

impl Registration {
    /// Waits for the callback. With a cluster, it may arrive on another
    /// instance: look in Redis whenever it announces a change, and now and
    /// then regardless.
    pub(crate) async fn arrived(&mut self) -> Arc<Delivery> {
        let shared = self.callbacks.cluster.clone();
        let mut watch = shared.as_ref().map(|cluster| {
            let key = cluster.key("callback", &self.token);
            (cluster.watch(cluster.channel(&key)), key)
        });
        loop {
            if let Some(delivery) = self.receiver.borrow_and_update().clone() {
                return delivery;
            }
            match (&shared, &mut watch) {
                (Some(cluster), Some((watch, key))) => {
                    if let Some(delivery) = fetch(cluster, key).await {
                        return Arc::new(delivery);
                    }
                    tokio::select! {
                        _ = self.receiver.changed() => {}
                        () = watch.changed(Duration::from_secs(1)) => {}
                    }
                }
                _ => {
                    if self.receiver.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

async fn fetch(cluster: &Cluster, key: &str) -> Option<Delivery> {
    let stored: Option<String> = cluster.conn().get(key).await.ok()?;
    serde_json::from_str::<Pending>(&stored?).ok()?.delivery
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A token whose callback came is done with; one still pending is
        // kept until it expires (see `Entry::expires`).
        if self.receiver.borrow().is_some() {
            self.callbacks.lock().entries.remove(&self.token);
        }
    }
}

/// The HMAC-SHA256 signature a job API sends with a callback body:
/// `sha256=<hex>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), body);
    format!("sha256={}", hex::encode(tag.as_ref()))
}

fn verify_signature(callback: &Callback, headers: &http::HeaderMap, body: &[u8]) -> bool {
    let Some(secret) = &callback.secret else {
        return true;
    };
    let Some(given) = headers
        .get(&callback.signature_header)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
    else {
        return false;
    };
    let Some(tag) = hex::decode(given).ok() else {
        return false;
    };
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, secret), body, &tag).is_ok()
}

/// What a callback delivers, once its signature holds (`None` when the
/// route signs callbacks and this one is not signed right).
pub(crate) fn delivery(
    callback: &Callback,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<Delivery> {
    if !verify_signature(callback, headers, body) {
        return None;
    }
    let status = headers
        .get(&callback.status_header)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u16>().ok())
        .filter(|s| (200..600).contains(s))
        .unwrap_or(200);
    Some(Delivery {
        status,
        content_type: headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: STANDARD.encode(body),
    })
}
