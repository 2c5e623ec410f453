//! The ticket history ("발행 티켓"): one JSON record per ticket issued (or that failed),
//! produced to `kafka.ticket_history_topic` and kept in an in-memory ring, newest first on
//! read. At start the topic is read from the beginning to its high watermark, then tailed, so
//! the history survives restarts and every replica sees every replica's tickets (which also
//! lets the sinks skip an event another replica already ticketed).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::source::{Producer, Record};
use crate::throttle::Throttle;

/// One ticket issued, or one that failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// When the outcome was known, RFC 3339 UTC.
    pub time: String,
    /// The `[[ticket]]` name.
    pub ticket: String,
    /// `jira`, `mantisbt` or `redmine`.
    pub system: String,
    /// The event id (`eventId` or `topic/partition/offset`); `test-…` for a test ticket.
    pub event_id: String,
    /// The issue key (`SEC-24`, `#123`); empty when it failed.
    pub key: String,
    /// The URL; empty when it failed.
    pub url: String,
    /// The system's numeric issue id, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The configured project.
    #[serde(default)]
    pub project: String,
    /// `created` or `failed`.
    pub outcome: String,
    /// `auto` (a `[ticket.when]` match), `manual` (the admin API) or `test`.
    pub origin: String,
    /// The system's error, when it failed. Never the auth key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last HTTP status, when the server answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// HTTP attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// Unique per record: lets the tail skip records this process already holds.
    #[serde(default)]
    pub record_id: String,
}

/// Why the history could not start.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Creating a Kafka client.
    #[error("ticket history: creating the Kafka {what}: {source}")]
    Kafka {
        /// consumer or producer.
        what: &'static str,
        /// The client's error.
        source: KafkaError,
    },
}

/// Records kept in memory by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Debug, Default)]
struct Ring {
    cap: usize,
    records: VecDeque<HistoryRecord>,
    record_ids: HashSet<String>,
    /// `ticket \x1f event_id` of created records → how many of them the ring holds.
    created: HashMap<String, u32>,
}

fn created_key(ticket: &str, event_id: &str) -> String {
    format!("{ticket}\u{1f}{event_id}")
}

impl Ring {
    fn push(&mut self, r: HistoryRecord) {
        if !r.record_id.is_empty() && !self.record_ids.insert(r.record_id.clone()) {
            return;
        }
        if r.outcome == "created" {
            *self
                .created
                .entry(created_key(&r.ticket, &r.event_id))
                .or_default() += 1;
        }
        self.records.push_back(r);
        while self.records.len() > self.cap {
            let Some(old) = self.records.pop_front() else {
                break;
            };
            self.record_ids.remove(&old.record_id);
            if old.outcome == "created" {
                let k = created_key(&old.ticket, &old.event_id);
                if let Some(n) = self.created.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        self.created.remove(&k);
                    }
                }
            }
        }
    }
}

struct Inner {
    ring: Mutex<Ring>,
    producer: Option<(Producer, String)>,
    stop: AtomicBool,
    seq: AtomicU64,
    instance: String,
    log: Throttle,
}

impl Inner {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The shared ticket history. Cheap to share as `Arc<History>`.
pub struct History {
    inner: Arc<Inner>,
    tail: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("records", &self.inner.ring().records.len())
            .finish()
    }
}

impl History {
    /// A history without Kafka (the CLI, tests): memory only, lost at exit.
    pub fn in_memory(capacity: usize) -> Self {
        Self::with(capacity, None)
    }

    fn with(capacity: usize, producer: Option<(Producer, String)>) -> Self {
        let instance = format!(
            "{:08x}",
            rand::random::<u32>() ^ std::process::id().rotate_left(16)
        );
        History {
            inner: Arc::new(Inner {
                ring: Mutex::new(Ring {
                    cap: capacity.max(1),
                    ..Ring::default()
                }),
                producer,
                stop: AtomicBool::new(false),
                seq: AtomicU64::new(0),
                instance,
                log: Throttle::new(Duration::from_secs(60)),
            }),
            tail: Mutex::new(None),
        }
    }

    /// Connects to Kafka, loads `topic` from the beginning to its high watermark (at most
    /// `load_timeout`), then keeps tailing it on a thread of its own. Blocking: call it at
    /// start, or from `spawn_blocking`.
    ///
    /// # Errors
    /// When librdkafka refuses the client configuration. A topic that does not exist yet is
    /// not an error: the history starts empty and the tail picks the topic up once it exists.
    pub fn start(
        brokers: &str,
        properties: &BTreeMap<String, String>,
        topic: &str,
        capacity: usize,
        load_timeout: Duration,
    ) -> Result<Self, HistoryError> {
        let producer = crate::source::build_producer(brokers, properties).map_err(|e| match e {
            crate::source::SourceError::Create { source, .. }
            | crate::source::SourceError::Subscribe { source, .. } => HistoryError::Kafka {
                what: "producer",
                source,
            },
        })?;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("group.id", "plura-forwarder-ticket-history")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in properties
            .iter()
            .filter(|(k, _)| crate::source::is_shared_property(k))
        {
            c.set(k, v);
        }
        let consumer: BaseConsumer = c.create().map_err(|source| HistoryError::Kafka {
            what: "consumer",
            source,
        })?;
        let history = Self::with(capacity, Some((producer, topic.to_owned())));
        let mut tail = Tail {
            consumer: Some(consumer),
            topic: topic.to_owned(),
            assigned: false,
            inner: Arc::clone(&history.inner),
        };
        tail.load(load_timeout);
        let handle = std::thread::Builder::new()
            .name("ticket-history".into())
            .spawn(move || tail.run())
            .ok();
        *history.tail.lock().unwrap_or_else(|p| p.into_inner()) = handle;
        Ok(history)
    }

    /// A fresh record id: this process's instance tag and a counter.
    pub fn next_record_id(&self) -> String {
        format!(
            "{}-{}",
            self.inner.instance,
            self.inner.seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Keeps `rec` in memory and produces it to the history topic (waiting at most 10 s for
    /// the broker; a failure is logged once a minute and the record stays in memory).
    pub async fn record(&self, mut rec: HistoryRecord) {
        if rec.record_id.is_empty() {
            rec.record_id = self.next_record_id();
        }
        self.inner.ring().push(rec.clone());
        let Some((producer, topic)) = &self.inner.producer else {
            return;
        };
        let payload = match serde_json::to_vec(&rec) {
            Ok(p) => p,
            Err(_) => return,
        };
        let record = Record {
            topic,
            key: Some(rec.ticket.as_bytes()),
            payload: &payload,
            headers: None,
        };
        if let Err(e) = producer.send(record, Duration::from_secs(10)).await {
            if let Some(suppressed) = self.inner.log.allow("produce") {
                tracing::warn!(topic = %topic, error = %e, suppressed, "Ticket history record not written to Kafka; kept in memory only.");
            }
        }
    }

    /// Up to `limit` records, newest first.
    pub fn list(&self, limit: usize) -> Vec<HistoryRecord> {
        let ring = self.inner.ring();
        let mut out: Vec<HistoryRecord> = ring.records.iter().rev().cloned().collect();
        // Records from several partitions interleave; order by time, newest first (stable,
        // so equal times keep arrival order).
        out.sort_by(|a, b| b.time.cmp(&a.time));
        out.truncate(limit);
        out
    }

    /// Whether a ticket for this event was created by any replica (as far as the ring holds).
    pub fn was_created(&self, ticket: &str, event_id: &str) -> bool {
        self.inner
            .ring()
            .created
            .contains_key(&created_key(ticket, event_id))
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.inner.ring().records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops the tail thread (also done on drop); waits for it, at most one poll interval.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(h) = self.tail.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.stop();
    }
}

const POLL: Duration = Duration::from_millis(200);

struct Tail {
    consumer: Option<BaseConsumer>,
    topic: String,
    assigned: bool,
    inner: Arc<Inner>,
}

impl Tail {
    /// Assigns every partition from the beginning; returns the high watermarks, or `None`
    /// when the topic does not exist (yet).
    fn assign(&mut self) -> Option<HashMap<i32, i64>> {
        let consumer = self.consumer.as_ref()?;
        let md = consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(5))
            .ok()?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        drop(md);
        if partitions.is_empty() {
            return None;
        }
        // Only the newest `capacity` records of each partition can stay in the ring: start
        // there instead of reading a long-retained topic from its beginning.
        let cap = i64::try_from(self.inner.ring().cap).unwrap_or(i64::MAX);
        let mut highs = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            let start = match consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(5)) {
                Ok((low, high)) => {
                    if high > low {
                        highs.insert(p, high);
                    }
                    Offset::Offset(low.max(high.saturating_sub(cap)))
                }
                Err(_) => Offset::Beginning,
            };
            let _ = tpl.add_partition_offset(&self.topic, p, start);
        }
        let assigned = consumer.assign(&tpl);
        drop(tpl);
        if let Err(e) = assigned {
            tracing::warn!(topic = %self.topic, error = %e, "Ticket history: cannot assign the topic.");
            return None;
        }
        self.assigned = true;
        Some(highs)
    }

    fn load(&mut self, timeout: Duration) {
        let Some(mut pending) = self.assign() else {
            tracing::info!(topic = %self.topic, "Ticket history topic not found; starting empty.");
            return;
        };
        let deadline = Instant::now() + timeout;
        let mut n = 0usize;
        while !pending.is_empty() && Instant::now() < deadline {
            if let Some((p, offset)) = self.poll_one() {
                n += 1;
                if pending.get(&p).is_some_and(|&high| offset + 1 >= high) {
                    pending.remove(&p);
                }
            }
        }
        if pending.is_empty() {
            tracing::info!(topic = %self.topic, records = n, "Ticket history loaded.");
        } else {
            tracing::warn!(topic = %self.topic, records = n, "Ticket history not fully loaded in time; the rest arrives in the background.");
        }
    }

    /// One poll; a record is pushed into the ring. Returns its partition and offset.
    fn poll_one(&mut self) -> Option<(i32, i64)> {
        let consumer = self.consumer.as_ref()?;
        let (p, offset, rec) = match consumer.poll(POLL)? {
            Ok(m) => {
                let rec = m
                    .payload()
                    .and_then(|b| serde_json::from_slice::<HistoryRecord>(b).ok());
                (m.partition(), m.offset(), rec)
            }
            Err(e) => {
                if let Some(suppressed) = self.inner.log.allow("consume") {
                    tracing::warn!(topic = %self.topic, error = %e, suppressed, "Ticket history: consume error.");
                }
                return None;
            }
        };
        if let Some(rec) = rec {
            self.inner.ring().push(rec);
        }
        Some((p, offset))
    }

    fn run(mut self) {
        let mut next_try = Instant::now();
        while !self.inner.stop.load(Ordering::Acquire) {
            if self.assigned {
                self.poll_one();
            } else if Instant::now() >= next_try {
                self.assign();
                next_try = Instant::now() + Duration::from_secs(5);
            } else {
                std::thread::sleep(POLL);
            }
        }
        // Messages are dropped inside poll_one; the consumer goes last.
        drop(self.consumer.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, ticket: &str, event: &str, outcome: &str, time: &str) -> HistoryRecord {
        HistoryRecord {
            time: time.into(),
            ticket: ticket.into(),
            system: "jira".into(),
            event_id: event.into(),
            key: "SEC-1".into(),
            url: "u".into(),
            id: None,
            project: "SEC".into(),
            outcome: outcome.into(),
            origin: "auto".into(),
            error: None,
            status: None,
            attempts: 1,
            record_id: id.into(),
        }
    }

    #[tokio::test]
    async fn ring_is_bounded_newest_first_and_knows_created_events() {
        let h = History::in_memory(2);
        h.record(rec("a", "t", "e1", "created", "2026-01-01T00:00:01Z"))
            .await;
        h.record(rec("b", "t", "e2", "failed", "2026-01-01T00:00:02Z"))
            .await;
        h.record(rec("b", "t", "e2", "failed", "2026-01-01T00:00:02Z"))
            .await; // same record id
        assert_eq!(h.len(), 2);
        assert!(h.was_created("t", "e1"));
        assert!(!h.was_created("t", "e2"));
        h.record(rec("c", "t", "e3", "created", "2026-01-01T00:00:03Z"))
            .await;
        assert!(!h.was_created("t", "e1"), "evicted");
        let l = h.list(10);
        assert_eq!(
            l.iter().map(|r| r.event_id.as_str()).collect::<Vec<_>>(),
            ["e3", "e2"]
        );
        assert_eq!(h.list(1).len(), 1);
    }
}
