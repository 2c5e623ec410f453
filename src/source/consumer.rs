//! The consumer, its rebalance context and the per-partition trackers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, TopicPartitionList};

use crate::ack::{OffsetStore, PartitionTracker};
use crate::metrics as m;

/// The consumer type used everywhere.
pub type KafkaConsumer = StreamConsumer<SourceContext>;

/// A Kafka client error with what we were doing.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Creating the consumer or producer failed (bad property, unknown broker syntax, …).
    #[error("creating the Kafka {what}: {source}")]
    Create {
        /// consumer or producer.
        what: &'static str,
        /// The client's error.
        source: KafkaError,
    },
    /// Subscribing failed.
    #[error("subscribing to {topics:?}: {source}")]
    Subscribe {
        /// Topics.
        topics: Vec<String>,
        /// The client's error.
        source: KafkaError,
    },
}

/// The trackers of the partitions this instance owns, replaced on every rebalance.
#[derive(Default)]
pub struct Trackers {
    map: Mutex<HashMap<(String, i32), Arc<PartitionTracker>>>,
    generation: AtomicU64,
    store: OnceLock<Arc<dyn OffsetStore>>,
    /// Set once the first assignment arrived (the consumer joined its group).
    joined: AtomicBool,
    /// On revoke, how long to wait for the revoked partitions' events to finish before the
    /// commit, in ms (0: do not wait).
    revoke_drain_ms: AtomicU64,
    /// Consumer lag of each owned partition, from librdkafka's statistics; a revoked partition
    /// is removed at once, so `/metrics` never shows a partition another member owns.
    lag: Mutex<BTreeMap<(String, i32), i64>>,
}

impl Trackers {
    /// The consumer lag of every owned partition (events in Kafka not yet committed by this
    /// group), as librdkafka last reported it; sorted by topic and partition.
    pub fn lag(&self) -> Vec<((String, i32), i64)> {
        let lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        lag.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Appends `consumer_lag{topic,partition}` in the Prometheus text format. Kept out of the
    /// metrics registry because a gauge there cannot be removed when a partition moves away.
    pub fn render_lag(&self, out: &mut String) {
        use std::fmt::Write as _;
        let lag = self.lag();
        if lag.is_empty() {
            return;
        }
        let name = m::CONSUMER_LAG;
        let _ = writeln!(
            out,
            "# HELP {name} Events in Kafka not yet committed, per owned partition."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        for ((topic, partition), v) in lag {
            let topic = topic.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "{name}{{topic=\"{topic}\",partition=\"{partition}\"}} {v}"
            );
        }
    }

    /// Takes one statistics report: the lag of the partitions this member owns.
    pub(super) fn record_lag(&self, stats: &rdkafka::Statistics) {
        let owned = self.lock();
        let mut lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, t) in &stats.topics {
            for (&partition, p) in &t.partitions {
                let key = (topic.clone(), partition);
                // -1 (unknown) until the partition has a committed or consumed position.
                if partition >= 0 && p.consumer_lag >= 0 && owned.contains_key(&key) {
                    lag.insert(key, p.consumer_lag);
                }
            }
        }
        lag.retain(|k, _| owned.contains_key(k));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Arc<PartitionTracker>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes whenever the assignment changes; callers caching a tracker re-fetch then.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether the consumer has received an assignment.
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    /// The tracker of a partition assigned now, without creating one.
    pub fn current(&self, topic: &str, partition: i32) -> Option<Arc<PartitionTracker>> {
        self.lock().get(&(topic.to_owned(), partition)).cloned()
    }

    /// The partition's tracker if it is still `then`, i.e. the partition stayed assigned since
    /// `then` was current. Revoked, or revoked and assigned again (a new tracker, reading from
    /// the committed offset), gives `None`.
    pub fn still(&self, then: &Arc<PartitionTracker>) -> Option<Arc<PartitionTracker>> {
        self.current(then.topic(), then.partition())
            .filter(|now| Arc::ptr_eq(then, now))
    }

    /// Whether `then`, a partition's tracker taken when the generation was `since` or later, is
    /// still its tracker: no rebalance since (one atomic load), or none that touched it.
    pub fn kept_since(&self, since: u64, then: &Arc<PartitionTracker>) -> bool {
        self.generation() == since || self.still(then).is_some()
    }

    /// The tracker for a partition, created when a message arrives before the assign callback
    /// was seen.
    pub fn get(&self, topic: &str, partition: i32) -> Arc<PartitionTracker> {
        let mut map = self.lock();
        if let Some(t) = map.get(&(topic.to_owned(), partition)) {
            return Arc::clone(t);
        }
        let store = self
            .store
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::new(crate::ack::NoStore));
        let t = PartitionTracker::new(topic, partition, store);
        map.insert((topic.to_owned(), partition), Arc::clone(&t));
        t
    }

    /// On revoke, wait up to `d` for every event of the revoked partitions to finish
    /// (delivered, parked or dead-lettered) before committing and releasing them, so that the
    /// next owner does not get them again. Zero (the default, and at shutdown once the
    /// destinations are closed) commits what is finished at once.
    pub fn set_revoke_drain(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.revoke_drain_ms.store(ms, Ordering::Release);
    }

    /// Waits (blocking this thread) until the trackers of `tpl` have nothing in flight, or the
    /// revoke drain time passed. Returns the events still in flight.
    fn drain(&self, tpl: &TopicPartitionList) -> usize {
        let limit = Duration::from_millis(self.revoke_drain_ms.load(Ordering::Acquire));
        let revoked: Vec<Arc<PartitionTracker>> = {
            let map = self.lock();
            tpl.elements()
                .iter()
                .filter_map(|e| map.get(&(e.topic().to_owned(), e.partition())).cloned())
                .collect()
        };
        let in_flight = || revoked.iter().map(|t| t.in_flight()).sum::<usize>();
        if limit.is_zero() || in_flight() == 0 {
            return in_flight();
        }
        let deadline = Instant::now() + limit;
        let wait = || loop {
            let left = in_flight();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // The callback runs inside the consumer's poll, on a runtime worker: let the runtime
        // move its other tasks (the sinks finishing these events) off this thread meanwhile.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// Every owned partition's tracker.
    pub fn all(&self) -> Vec<Arc<PartitionTracker>> {
        self.lock().values().cloned().collect()
    }

    /// Where a consumer's offsets go once every destination finished with an event.
    pub(super) fn set_store(&self, store: Arc<dyn OffsetStore>) {
        let _ = self.store.set(store);
    }

    /// A rebalance assigned `tpl`: each partition gets its tracker.
    pub(super) fn on_assign(&self, tpl: &TopicPartitionList) {
        tracing::info!(partitions = tpl.count(), "Partitions assigned.");
        self.assign(tpl);
    }

    /// A rebalance revokes `tpl`, before the consumer lets the partitions go: finish (deliver
    /// or park) their events, bounded in time, and `commit` before the partitions go to
    /// another member; whatever is still in flight after that is redelivered to the new owner
    /// (at least once). A `lost` assignment (the member was thrown out) cannot commit.
    pub(super) fn on_revoke(
        &self,
        tpl: &TopicPartitionList,
        lost: bool,
        commit: impl FnOnce() -> KafkaResult<()>,
    ) {
        tracing::info!(
            partitions = tpl.count(),
            "Partitions revoked; finishing their events, then committing."
        );
        if !lost {
            let left = self.drain(tpl);
            if left > 0 {
                tracing::warn!(events = left, "Revoked partitions still have events in flight; the next owner gets them again.");
            }
            if let Err(e) = commit() {
                if !is_no_offset_error(&e) {
                    tracing::warn!(error = %e, "Commit on revoke failed.");
                }
            }
        }
        self.revoke(tpl);
    }

    fn assign(&self, tpl: &TopicPartitionList) {
        for e in tpl.elements() {
            self.get(e.topic(), e.partition());
        }
        self.joined.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn revoke(&self, tpl: &TopicPartitionList) {
        let mut map = self.lock();
        let mut lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        for e in tpl.elements() {
            let key = (e.topic().to_owned(), e.partition());
            lag.remove(&key);
            if let Some(t) = map.remove(&key) {
                t.close();
            }
        }
        drop(lag);
        drop(map);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// The consumer context: keeps [`Trackers`] in step with the assignment and counts commits.
pub struct SourceContext {
    trackers: Arc<Trackers>,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.trackers.record_lag(&statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        librdkafka_log(level as i32, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "Kafka client error.");
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.trackers
                .on_revoke(tpl, consumer.assignment_lost(), || {
                    consumer.commit_consumer_state(CommitMode::Sync)
                });
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.trackers.on_assign(tpl),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "Rebalance error."),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        committed(result);
    }
}

/// A librdkafka log line at its syslog level (0 emergency … 7 debug), for either consumer.
pub(super) fn librdkafka_log(level: i32, fac: &str, line: &str) {
    match level {
        ..=3 => tracing::error!(target: "librdkafka", fac, "{line}"),
        4 => tracing::warn!(target: "librdkafka", fac, "{line}"),
        5 | 6 => tracing::info!(target: "librdkafka", fac, "{line}"),
        _ => tracing::debug!(target: "librdkafka", fac, "{line}"),
    }
}

/// Counts an automatic commit, or logs why it failed ("nothing to commit" is no failure).
pub(super) fn committed(result: KafkaResult<()>) {
    match result {
        Ok(()) => metrics::counter!(m::OFFSETS_COMMITTED_TOTAL).increment(1),
        Err(e) if is_no_offset_error(&e) => {}
        Err(e) => tracing::warn!(error = %e, "Offset commit failed."),
    }
}

/// `true` for "nothing to commit", which is not an error for us.
pub fn is_no_offset_error(e: &KafkaError) -> bool {
    matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
}

/// Stores watermarks into the consumer's offset store (librdkafka stores `offset + 1`).
struct ConsumerStore(OnceLock<Weak<KafkaConsumer>>);

impl OffsetStore for ConsumerStore {
    fn store(&self, topic: &str, partition: i32, offset: i64) {
        let Some(consumer) = self.0.get().and_then(Weak::upgrade) else {
            return;
        };
        if let Err(e) = consumer.store_offset(topic, partition, offset) {
            // A revoked partition refuses stores; its events are redelivered to the new owner.
            tracing::debug!(topic, partition, offset, error = %e, "Offset store refused.");
        }
    }
}

/// Consumer defaults (performance.md, delivery.md), then the user's properties, then the
/// settings at-least-once depends on, which a property cannot override.
pub fn consumer_config(
    brokers: &str,
    group_id: &str,
    commit_interval_ms: u64,
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("auto.offset.reset", "earliest")
        // librdkafka ≥ 2.1 defaults to 1000 ms: a 2.6× slowdown whenever we fall behind.
        .set("fetch.queue.backoff.ms", "10")
        // consumer_lag per partition (Trackers::render_lag); a property may change it.
        .set("statistics.interval.ms", "5000")
        .set("enable.partition.eof", "false")
        // librdkafka prefetches 100,000 messages per consumer by default (about 100 MB of
        // events): a working set that no cache holds, faulted in fresh. 10,000 (20 ms at
        // 500k events/s) kept the load harness's rate and cut CPU per event by 9 % and peak
        // RSS from 69 to 44 MB; 5,000 and less starved the pipeline on the mock cluster.
        .set("queued.min.messages", "10000")
        .set("fetch.max.bytes", fetch_max_bytes(properties));
    for (k, v) in properties {
        c.set(k, v);
    }
    for (k, v) in [
        ("enable.auto.commit", "true".to_owned()),
        ("enable.auto.offset.store", "false".to_owned()),
        ("auto.commit.interval.ms", commit_interval_ms.to_string()),
    ] {
        if properties.contains_key(k) {
            tracing::warn!(
                property = k,
                "kafka.properties cannot override {k}; at-least-once depends on it."
            );
        }
        c.set(k, v);
    }
    c
}

/// At most this much in one Fetch answer, by default. With librdkafka's 50 MB an answer could
/// bring tens of MB, each read into fresh memory: page faults in the fetch thread's socket
/// read, and a working set larger than the L2. Load harness, TCP RFC 5424, 26 invocations
/// interleaved (2-core EPYC, 2026-12-04, 15 with the default, 11 with 1 MiB): CPU per event
/// 1.72 → 1.55 µs, peak RSS 54–67 → 39–51 MB (medians and ranges); 4 MiB did not help. The
/// fetch thread's heap keeps the reused answers, though: after a backlog 79–95 MiB stay
/// against 48–64. A broker sends one answer per round trip, so far brokers (10 ms: 100 MB/s)
/// may need more: `fetch.max.bytes` in `kafka.properties`.
const FETCH_MAX_BYTES: u64 = 1 << 20;

/// The default `fetch.max.bytes`: [`FETCH_MAX_BYTES`], or the user's `message.max.bytes` when
/// larger (librdkafka refuses a `fetch.max.bytes` set below it).
fn fetch_max_bytes(properties: &BTreeMap<String, String>) -> String {
    let floor = properties
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    FETCH_MAX_BYTES.max(floor).to_string()
}

/// The consumer with its trackers, subscribed to `topics`.
pub struct KafkaSource {
    /// The consumer.
    pub consumer: Arc<KafkaConsumer>,
    /// Its partitions' trackers.
    pub trackers: Arc<Trackers>,
}

/// Creates and subscribes the consumer.
///
/// # Errors
/// When librdkafka refuses the configuration or the subscription.
pub fn build_consumer(
    config: &ClientConfig,
    topics: &[String],
) -> Result<KafkaSource, SourceError> {
    let trackers = Arc::new(Trackers::default());
    let store = Arc::new(ConsumerStore(OnceLock::new()));
    trackers.set_store(store.clone());
    let consumer: KafkaConsumer = config
        .create_with_context(SourceContext {
            trackers: Arc::clone(&trackers),
        })
        .map_err(|source| SourceError::Create {
            what: "consumer",
            source,
        })?;
    let consumer = Arc::new(consumer);
    let _ = store.0.set(Arc::downgrade(&consumer));
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .map_err(|source| SourceError::Subscribe {
            topics: topics.to_vec(),
            source,
        })?;
    Ok(KafkaSource { consumer, trackers })
}

/// Properties that apply to producers too (security and connection settings), so that the
/// producer does not warn about consumer-only keys.
pub fn is_shared_property(k: &str) -> bool {
    [
        "security.",
        "sasl.",
        "ssl.",
        "client.",
        "socket.",
        "broker.",
        "metadata.",
        "api.",
        "reconnect.",
    ]
    .iter()
    .any(|p| k.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_set_and_a_property_overrides_them_but_not_the_commit_settings() {
        let none = BTreeMap::new();
        let c = consumer_config("127.0.0.1:9092", "g", 250, &none);
        assert_eq!(c.get("queued.min.messages"), Some("10000"));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(c.get("auto.commit.interval.ms"), Some("250"));
        let props = BTreeMap::from([
            ("queued.min.messages".to_owned(), "50000".to_owned()),
            ("enable.auto.offset.store".to_owned(), "true".to_owned()),
        ]);
        let c = consumer_config("127.0.0.1:9092", "g", 250, &props);
        assert_eq!(c.get("queued.min.messages"), Some("50000"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
    }

    /// `fetch.max.bytes` defaults to 1 MiB, follows a larger `message.max.bytes` (librdkafka
    /// would refuse the consumer otherwise), and a property sets it outright.
    #[test]
    fn fetch_max_bytes_defaults_to_1_mib_and_never_below_message_max_bytes() {
        use rdkafka::consumer::BaseConsumer;
        let none = BTreeMap::new();
        let c = consumer_config("127.0.0.1:9", "g", 250, &none);
        assert_eq!(c.get("fetch.max.bytes"), Some("1048576"));
        assert!(c.create::<BaseConsumer>().is_ok());
        let big = BTreeMap::from([("message.max.bytes".to_owned(), "4000000".to_owned())]);
        let c = consumer_config("127.0.0.1:9", "g", 250, &big);
        assert_eq!(c.get("fetch.max.bytes"), Some("4000000"));
        if let Err(e) = c.create::<BaseConsumer>() {
            panic!("a larger message.max.bytes alone must still make a consumer: {e}");
        }
        let own = BTreeMap::from([("fetch.max.bytes".to_owned(), "52428800".to_owned())]);
        let c = consumer_config("127.0.0.1:9", "g", 250, &own);
        assert_eq!(c.get("fetch.max.bytes"), Some("52428800"));
    }

    /// Trackers with partitions 0 and 1 of "events" assigned, and a list of partition 1 alone.
    fn assigned_0_and_1() -> (Trackers, TopicPartitionList) {
        let t = Trackers::default();
        let mut both = TopicPartitionList::new();
        both.add_partition("events", 0);
        both.add_partition("events", 1);
        let mut one = TopicPartitionList::new();
        one.add_partition("events", 1);
        t.assign(&both);
        (t, one)
    }

    /// A tracker taken before a rebalance is still good only if its partition stayed assigned
    /// throughout: a revoke, or a revoke and a new assign, both end it.
    #[test]
    fn a_tracker_is_still_current_only_while_its_partition_stays_assigned() {
        let (t, one) = assigned_0_and_1();
        let p0 = t.current("events", 0).expect("assigned");
        let p1 = t.current("events", 1).expect("assigned");
        assert!(t.still(&p0).is_some());
        // Partition 1 moves away and comes back: a new tracker, no longer "still".
        t.revoke(&one);
        assert!(t.current("events", 1).is_none());
        assert!(t.still(&p1).is_none());
        t.assign(&one);
        assert!(t.current("events", 1).is_some());
        assert!(t.still(&p1).is_none());
        // Partition 0 was not touched by either rebalance (cooperative).
        assert!(t.still(&p0).is_some_and(|now| Arc::ptr_eq(&now, &p0)));
    }

    /// A burst's tracker is trusted without a lookup while no rebalance happened; after one,
    /// only if its partition was left alone.
    #[test]
    fn a_tracker_is_kept_since_a_generation_unless_its_partition_moved() {
        let (t, one) = assigned_0_and_1();
        let since = t.generation();
        let (p0, p1) = (t.get("events", 0), t.get("events", 1));
        assert!(t.kept_since(since, &p0) && t.kept_since(since, &p1));
        // Partition 1 is revoked and assigned again: a new tracker, reading from the committed
        // offset; partition 0 stays.
        t.revoke(&one);
        t.assign(&one);
        assert_ne!(t.generation(), since);
        assert!(t.kept_since(since, &p0));
        assert!(!t.kept_since(since, &p1), "revoked and assigned again");
        let p1_new = t.get("events", 1);
        assert!(t.kept_since(since, &p1_new), "taken after the rebalance");
        t.revoke(&one);
        assert!(!t.kept_since(since, &p1_new), "revoked");
    }
}
