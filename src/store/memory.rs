//! The single-instance idempotency store: a map behind a mutex, with a TTL
//! per record and a memory bound on stored answers (the oldest finished
//! records go first, and are counted).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Begin, BoxFuture, Fingerprint, Store, StoreResult, Stored, Ticket};

pub(crate) struct MemoryStore {
    inner: Mutex<Inner>,
    /// Bytes of stored answers allowed before the oldest are evicted.
    limit: usize,
}

#[derive(Default)]
struct Inner {
    records: HashMap<String, Record>,
    /// Finished records by age, for eviction.
    finished: BTreeMap<u64, String>,
    bytes: usize,
    evictions: u64,
    next_seq: u64,
}

struct Record {
    fingerprint: Fingerprint,
    expires: Instant,
    ttl: Duration,
    state: RecordState,
}

enum RecordState {
    /// A leader follows the job; waiters watch for its answer.
    Leading {
        ticket: Option<Ticket>,
        answer: watch::Sender<Signal>,
    },
    /// The job was submitted and nobody follows it now.
    Detached(Ticket),
    Finished {
        answer: Arc<Stored>,
        seq: u64,
    },
}

/// What waiters learn from a leader.
#[derive(Clone)]
enum Signal {
    Pending,
    Done(Arc<Stored>),
    LetGo,
}

impl MemoryStore {
    pub(crate) fn new(limit: u64) -> Self {
        MemoryStore {
            inner: Mutex::default(),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Drops expired records every `every`, for as long as the store lives
    /// (as mini-redis purges expired keys): without it a record would go
    /// only when its own key came back, and distinct keys would pile up.
    pub(crate) fn sweep_every(self: &Arc<Self>, every: Duration) {
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                store.lock().sweep(Instant::now());
            }
        });
    }
}

#[cfg(test)]
impl MemoryStore {
    /// Bytes of stored answers held now.
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Inner {
    fn remove(&mut self, key: &str) -> Option<Record> {
        let record = self.records.remove(key)?;
        if let RecordState::Finished { answer, seq } = &record.state {
            self.finished.remove(seq);
            self.bytes -= answer.size();
        }
        Some(record)
    }

    /// Drops every expired record but those a leader still follows (its
    /// answer is on the way, and waiters need its record to find it).
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .records
            .iter()
            .filter(|(_, r)| r.expires <= now && !matches!(r.state, RecordState::Leading { .. }))
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
    }

    /// Drops finished records, oldest first, until within `limit`.
    fn evict(&mut self, limit: usize) {
        while self.bytes > limit {
            let Some((_, key)) = self.finished.pop_first() else {
                return;
            };
            if let Some(record) = self.records.remove(&key) {
                if let RecordState::Finished { answer, .. } = &record.state {
                    self.bytes -= answer.size();
                }
                self.evictions += 1;
            }
        }
    }
}

fn wait(mut signal: watch::Receiver<Signal>) -> BoxFuture<'static, Option<Arc<Stored>>> {
    Box::pin(async move {
        loop {
            match &*signal.borrow_and_update() {
                Signal::Pending => {}
                Signal::Done(answer) => return Some(Arc::clone(answer)),
                Signal::LetGo => return None,
            }
            if signal.changed().await.is_err() {
                return None;
            }
        }
    })
}

impl Store for MemoryStore {
    fn begin(
        &self,
        key: &str,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Begin>> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.records.get(key).is_some_and(|r| r.expires <= now) {
            inner.remove(key);
        }
        let begin = match inner.records.get_mut(key) {
            None => {
                let (answer, _) = watch::channel(Signal::Pending);
                inner.records.insert(
                    key.to_owned(),
                    Record {
                        fingerprint,
                        expires: now + ttl,
                        ttl,
                        state: RecordState::Leading {
                            ticket: None,
                            answer,
                        },
                    },
                );
                Begin::Lead
            }
            Some(record) if record.fingerprint != fingerprint => Begin::Mismatch,
            Some(record) => match &record.state {
                RecordState::Leading { answer, .. } => Begin::Wait(wait(answer.subscribe())),
                RecordState::Finished { answer, .. } => Begin::Replay(Arc::clone(answer)),
                RecordState::Detached(ticket) => {
                    let ticket = ticket.clone();
                    let (answer, _) = watch::channel(Signal::Pending);
                    record.state = RecordState::Leading {
                        ticket: Some(ticket.clone()),
                        answer,
                    };
                    Begin::Resume(ticket)
                }
            },
        };
        Box::pin(std::future::ready(Ok(begin)))
    }

    fn submitted(&self, key: &str, job: Ticket) -> BoxFuture<'_, StoreResult<()>> {
        if let Some(Record {
            state: RecordState::Leading { ticket, .. },
            ..
        }) = self.lock().records.get_mut(key)
        {
            *ticket = Some(job);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn complete(&self, key: &str, stored: Stored) -> BoxFuture<'_, StoreResult<()>> {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let stored = Arc::new(stored);
        let size = stored.size();
        if let Some(record) = inner.records.get_mut(key) {
            if let RecordState::Leading { answer, .. } = &record.state {
                answer.send_replace(Signal::Done(Arc::clone(&stored)));
                record.expires = Instant::now() + record.ttl;
                record.state = RecordState::Finished {
                    answer: stored,
                    seq,
                };
                inner.finished.insert(seq, key.to_owned());
                inner.bytes += size;
                inner.evict(self.limit);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(&self, key: &str) -> BoxFuture<'_, StoreResult<()>> {
        let mut inner = self.lock();
        let forget = match inner.records.get_mut(key) {
            Some(record) => match &mut record.state {
                RecordState::Leading { ticket, answer } => {
                    answer.send_replace(Signal::LetGo);
                    match ticket.take() {
                        Some(ticket) => {
                            record.state = RecordState::Detached(ticket);
                            false
                        }
                        None => true,
                    }
                }
                _ => false,
            },
            None => false,
        };
        if forget {
            inner.remove(key);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn len(&self) -> usize {
        self.lock().records.len()
    }

    fn evictions(&self) -> u64 {
        self.lock().evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, Method, StatusCode};

    fn fp(body: &str) -> Fingerprint {
        Fingerprint::of(&Method::POST, "/orders", body.as_bytes())
    }

    fn answer(body: &'static str) -> Stored {
        Stored::Answer {
            status: StatusCode::CREATED,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn ticket() -> Ticket {
        Ticket {
            route: "r".into(),
            status_url: "http://b/status/1".into(),
            job_id: "1".into(),
            original: "http://b/orders".into(),
            callback: None,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// Expired records go without their keys coming back: finished,
    /// detached and too-large alike, and the bytes they held with them. A
    /// record a leader still follows stays.
    #[tokio::test(start_paused = true)]
    async fn the_sweep_drops_expired_records_and_their_bytes() {
        let store = Arc::new(MemoryStore::new(1 << 20));
        store.sweep_every(Duration::from_secs(30));
        for (key, body) in [("done-1", "one"), ("done-2", "two")] {
            store.begin(key, fp(body), HOUR).await.unwrap();
            store.complete(key, answer(body)).await.unwrap();
        }
        store.begin("too-large", fp("t"), HOUR).await.unwrap();
        let too_large = Stored::TooLarge {
            status: StatusCode::OK,
            limit: 1,
        };
        store.complete("too-large", too_large).await.unwrap();
        store.begin("detached", fp("d"), HOUR).await.unwrap();
        store.submitted("detached", ticket()).await.unwrap();
        store.release("detached").await.unwrap();
        store.begin("leading", fp("l"), HOUR).await.unwrap();
        assert_eq!(store.len(), 5);
        assert!(store.bytes() > 0);

        tokio::time::sleep(HOUR / 2).await;
        assert_eq!(store.len(), 5, "nothing has expired yet");
        tokio::time::sleep(HOUR).await;
        assert_eq!(store.len(), 1, "only the followed record is left");
        assert_eq!(store.bytes(), 0, "the memory accounting is back to zero");
    }

    #[tokio::test(start_paused = true)]
    async fn lead_wait_replay_mismatch() {
        let store = MemoryStore::new(1 << 20);
        assert!(matches!(
            store.begin("k", fp("a"), HOUR).await.unwrap(),
            Begin::Lead
        ));
        let Begin::Wait(waiting) = store.begin("k", fp("a"), HOUR).await.unwrap() else {
            panic!("a second request waits for the first");
        };
        assert!(matches!(
            store.begin("k", fp("b"), HOUR).await.unwrap(),
            Begin::Mismatch
        ));
        store.complete("k", answer("done")).await.unwrap();
        let got = waiting.await.expect("the waiter gets the answer");
        assert!(matches!(&*got, Stored::Answer { body, .. } if body == "done"));
        assert!(matches!(
            store.begin("k", fp("a"), HOUR).await.unwrap(),
            Begin::Replay(_)
        ));
        tokio::time::advance(HOUR).await;
        assert!(
            matches!(store.begin("k", fp("a"), HOUR).await.unwrap(), Begin::Lead),
            "expired"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_lets_go_leaves_its_job_to_the_next() {
        let store = MemoryStore::new(1 << 20);
        assert!(matches!(
            store.begin("k", fp("a"), HOUR).await.unwrap(),
            Begin::Lead
        ));
        let Begin::Wait(waiting) = store.begin("k", fp("a"), HOUR).await.unwrap() else {
            panic!();
        };
        store.submitted("k", ticket()).await.unwrap();
        store.release("k").await.unwrap();
        assert!(waiting.await.is_none(), "waiters learn the leader let go");
        let Begin::Resume(t) = store.begin("k", fp("a"), HOUR).await.unwrap() else {
            panic!("the next request resumes the submitted job");
        };
        assert_eq!(t, ticket());
        // Nothing submitted: the key is forgotten and the next one leads.
        assert!(matches!(
            store.begin("j", fp("a"), HOUR).await.unwrap(),
            Begin::Lead
        ));
        store.release("j").await.unwrap();
        assert!(matches!(
            store.begin("j", fp("a"), HOUR).await.unwrap(),
            Begin::Lead
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn oldest_finished_answers_are_evicted_at_the_bound() {
        let store = MemoryStore::new(25);
        for key in ["a", "b", "c"] {
            assert!(matches!(
                store.begin(key, fp(key), HOUR).await.unwrap(),
                Begin::Lead
            ));
            store.complete(key, answer("0123456789")).await.unwrap();
        }
        assert_eq!(store.evictions(), 1);
        assert_eq!(store.len(), 2);
        assert!(
            matches!(store.begin("a", fp("a"), HOUR).await.unwrap(), Begin::Lead),
            "a was evicted"
        );
        assert!(matches!(
            store.begin("c", fp("c"), HOUR).await.unwrap(),
            Begin::Replay(_)
        ));
    }
}
