//! Parking (delivery.md §3): events for a destination that is down or too slow go, as the
//! original event bytes, to its own retry topic `{retry_topic}.{destination}`; the
//! (event, destination) ack completes only when Kafka acknowledged that produce, so a parked
//! event is committed on the main topic without being lost.
//!
//! A destination is parked when its sink has been down (not connected after a failed
//! attempt) for [`DOWN_CONFIRM`] (capped by `park_after_ms`), or its queue stayed full for
//! `park_after_ms`. It is unparked after a hold (see [`ParkFlag`]) once its sink is connected
//! and its queue at most half full; the retry consumer (`retry.rs`) then feeds the parked
//! events back.
//!
//! Frames still queued for a destination that is down are taken back and parked as rendered
//! bytes (header [`RENDERED_HEADER`]). Frames already written and not acknowledged (at most a
//! batch plus the socket send buffer), and the queue of a destination parked for slowness, stay
//! with the sink: delivered when it can, or redelivered from Kafka after a restart; until then
//! they hold their partitions' commit point back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Origin;
use crate::ack::Ack;
use crate::metrics as m;
use crate::sink::{SinkSender, SinkState};
use crate::source::{Producer, Record};
use crate::throttle::Throttle;

/// Header of a parked record that holds a rendered frame (taken back from a sink's queue)
/// instead of the original event: the retry consumer sends it as it is.
pub const RENDERED_HEADER: &str = "rendered";

/// A sink down this long (or `park_after_ms` if shorter) is parked: long enough to ride out a
/// reconnect after a reset, short enough not to fill its queue with frames that would wait.
pub const DOWN_CONFIRM: Duration = Duration::from_millis(250);

/// The retry topic of a destination. Characters Kafka refuses in topic names become `_`, and
/// then a hash of the name is appended so that two such names never share a topic.
pub fn retry_topic_name(prefix: &str, destination: &str) -> String {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if destination.chars().all(ok) {
        return format!("{prefix}.{destination}");
    }
    let dest: String = destination
        .chars()
        .map(|c| if ok(c) { c } else { '_' })
        .collect();
    // FNV-1a: stable across builds and platforms.
    let hash = destination.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{prefix}.{dest}-{:08x}", hash as u32)
}

/// Creates the retry topics that do not exist yet (one partition each, so that a
/// destination's parked events come back in the order they were parked). Failures are logged,
/// not fatal: a broker with auto-creation still works, and parking falls back to backpressure.
pub async fn ensure_topics(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topics: &[String],
) {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in properties
        .iter()
        .filter(|(k, _)| super::super::source::is_shared_property(k))
    {
        c.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = match c.create() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot create a Kafka admin client; retry topics not created.");
            return;
        }
    };
    // Bounded: a broker without CreateTopics (librdkafka's mock cluster) must not hold startup.
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)));
    // Broker default replication first (-1, KIP-464); one replica where that is refused.
    for replication in [-1, 1] {
        let missing: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(replication)))
            .collect();
        match admin.create_topics(&missing, &opts).await {
            Ok(results) => {
                let failed: Vec<_> = results
                    .into_iter()
                    .filter_map(|r| r.err())
                    .filter(|(_, code)| *code != RDKafkaErrorCode::TopicAlreadyExists)
                    .collect();
                if failed.is_empty() {
                    tracing::info!(topics = ?topics, "Retry topics ready.");
                    return;
                }
                tracing::warn!(?failed, replication, "Creating retry topics failed.");
            }
            Err(e) => {
                // Not supported or unreachable: auto-creation (producer and retry consumer
                // ask for it) is the fallback.
                tracing::warn!(error = %e, "Creating retry topics failed; relying on auto-creation.");
                return;
            }
        }
    }
}

/// Produces parked events in the background, a bounded number at a time. Cheap to clone.
#[derive(Clone)]
pub struct Parker {
    producer: Producer,
    slots: Arc<Semaphore>,
    failing: Arc<AtomicBool>,
    tasks: TaskTracker,
    stop: CancellationToken,
    throttle: Arc<Throttle>,
}

impl Parker {
    /// A parker holding at most `max_in_flight` events not yet acknowledged by Kafka.
    pub fn new(producer: Producer, max_in_flight: usize) -> Self {
        Parker {
            producer,
            slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
            failing: Arc::new(AtomicBool::new(false)),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            throttle: Arc::new(Throttle::new(Duration::from_secs(60))),
        }
    }

    /// Whether parking works now: the last produce succeeded and there is room.
    pub fn available(&self) -> bool {
        !self.failing.load(Ordering::Relaxed) && self.slots.available_permits() > 0
    }

    /// Parks one event of the main topics for `destination`: its original bytes and key, with
    /// headers `destination`, `source_topic`, `source_partition`, `source_offset` and then the
    /// source message's own headers. Waits for a slot (bounded memory).
    #[allow(clippy::too_many_arguments)]
    pub async fn park_event(
        &self,
        topic: &Arc<str>,
        destination: &str,
        payload: &[u8],
        key: Option<&[u8]>,
        origin: Origin<'_>,
        source_headers: Option<&BorrowedHeaders>,
        ack: Ack,
        counter: &Counter,
    ) {
        let mut headers =
            OwnedHeaders::new_with_capacity(4 + source_headers.map_or(0, |h| h.count()))
                .insert(Header {
                    key: "destination",
                    value: Some(destination),
                })
                .insert(Header {
                    key: "source_topic",
                    value: Some(origin.topic),
                })
                .insert(Header {
                    key: "source_partition",
                    value: Some(&origin.partition.to_string()),
                })
                .insert(Header {
                    key: "source_offset",
                    value: Some(&origin.offset.to_string()),
                });
        if let Some(src) = source_headers {
            for h in src.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        self.park_record(topic, payload, key, headers, ack, counter)
            .await;
    }

    /// Produces one record to `topic` (retrying with backoff); `ack` completes when Kafka
    /// acknowledged it. Waits for a slot.
    pub async fn park_record(
        &self,
        topic: &Arc<str>,
        payload: &[u8],
        key: Option<&[u8]>,
        headers: OwnedHeaders,
        ack: Ack,
        counter: &Counter,
    ) {
        let Ok(permit) = Arc::clone(&self.slots).acquire_owned().await else {
            return;
        };
        let payload = payload.to_vec();
        let key = key.map(<[u8]>::to_vec);
        let (topic, counter, this) = (Arc::clone(topic), counter.clone(), self.clone());
        self.tasks.spawn(async move {
            let _permit = permit;
            let record = Record {
                topic: &topic,
                key: key.as_deref(),
                payload: &payload,
                headers: Some(&headers),
            };
            let sent = this
                .producer
                .send_retrying(record, &this.stop, |e| {
                    this.failing.store(true, Ordering::Relaxed);
                    if this.throttle.allow("produce").is_some() {
                        tracing::warn!(topic = %topic, error = %e, "Parking produce failed; retrying.");
                    }
                })
                .await;
            if sent {
                this.failing.store(false, Ordering::Relaxed);
                counter.increment(1);
                ack.done();
            } else {
                tracing::error!(topic = %topic, "Gave up parking an event at shutdown; it will be redelivered.");
            }
        });
    }

    /// Waits for every parked event in flight, up to `grace`; the rest stay uncommitted.
    pub async fn close(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            self.stop.cancel();
            self.tasks.wait().await;
        }
    }
}

/// The parked flag of one destination, shared by the pipeline and the retry consumer.
///
/// A parking episode lasts at least a hold time: 1 s, doubled (up to 60 s) each time the
/// destination is parked again within a minute of being unparked. A destination that keeps
/// filling its queue (too slow for the input) so stays parked, fed by the retry consumer,
/// instead of making the pipeline wait `park_after_ms` over and over.
#[derive(Debug, Clone, Default)]
pub struct ParkFlag(Arc<FlagState>);

#[derive(Debug, Default)]
struct FlagState {
    parked: AtomicBool,
    /// When it was last parked or unparked, ms since [`epoch`].
    since_ms: AtomicU64,
    /// The current episode's minimum length, ms.
    hold_ms: AtomicU64,
}

/// Shortest parking episode.
const HOLD_MIN_MS: u64 = 1_000;
/// Longest hold after repeated episodes.
const HOLD_MAX_MS: u64 = 60_000;

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl ParkFlag {
    /// Whether the destination is parked.
    pub fn is_parked(&self) -> bool {
        self.0.parked.load(Ordering::Acquire)
    }

    /// Parks; `true` if it was not parked before.
    pub fn park(&self) -> bool {
        if self.0.parked.swap(true, Ordering::AcqRel) {
            return false;
        }
        let now = now_ms();
        let unparked_for = now.saturating_sub(self.0.since_ms.load(Ordering::Acquire));
        let prev = self.0.hold_ms.load(Ordering::Acquire);
        let hold = if unparked_for < HOLD_MAX_MS {
            (prev * 2).clamp(HOLD_MIN_MS, HOLD_MAX_MS)
        } else {
            HOLD_MIN_MS
        };
        self.0.hold_ms.store(hold, Ordering::Release);
        self.0.since_ms.store(now, Ordering::Release);
        true
    }

    /// The current (or last) episode's minimum length.
    pub fn hold(&self) -> Duration {
        Duration::from_millis(self.0.hold_ms.load(Ordering::Acquire))
    }

    /// Unparks when the hold time has passed and the destination is healthy again:
    /// connected, queue at most half full. Returns whether the destination is (still) parked.
    pub fn refresh(&self, name: &str, sink: &SinkSender) -> bool {
        if !self.is_parked() {
            return false;
        }
        let now = now_ms();
        let held = now.saturating_sub(self.0.since_ms.load(Ordering::Acquire));
        if held < self.0.hold_ms.load(Ordering::Acquire) {
            return true;
        }
        let healthy = sink.state() == SinkState::Connected && sink.queued() <= sink.capacity() / 2;
        if healthy && self.0.parked.swap(false, Ordering::AcqRel) {
            self.0.since_ms.store(now, Ordering::Release);
            tracing::info!(destination = %name, parked_ms = held, "Destination healthy again; unparked.");
            return false;
        }
        true
    }
}

/// The pipeline's view of one destination's parking: the shared flag and the timers.
pub(crate) struct ParkGate {
    pub flag: ParkFlag,
    pub topic: Arc<str>,
    pub parked_total: Counter,
    down_since: Option<Instant>,
    full_since: Option<Instant>,
    park_after: Duration,
}

impl ParkGate {
    pub fn new(destination: &str, topic: String, flag: ParkFlag, park_after: Duration) -> Self {
        ParkGate {
            flag,
            topic: topic.into(),
            parked_total: metrics::counter!(m::EVENTS_PARKED_TOTAL, "destination" => destination.to_owned()),
            down_since: None,
            full_since: None,
            park_after,
        }
    }

    /// Whether events for this destination go to its retry topic now.
    pub fn parked(&mut self, name: &str, sink: &SinkSender) -> bool {
        if self.flag.refresh(name, sink) {
            return true;
        }
        if sink.is_down() {
            let since = *self.down_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= DOWN_CONFIRM.min(self.park_after) {
                self.park(name, "down");
                return true;
            }
        } else {
            self.down_since = None;
        }
        false
    }

    /// The queue took a frame at once: it is not full.
    pub fn had_room(&mut self) {
        self.full_since = None;
    }

    /// How much longer to wait for room before parking (zero: park now).
    pub fn full_wait(&mut self) -> Duration {
        let since = *self.full_since.get_or_insert_with(Instant::now);
        self.park_after.saturating_sub(since.elapsed())
    }

    pub fn park(&mut self, name: &str, why: &'static str) {
        self.down_since = None;
        self.full_since = None;
        if self.flag.park() {
            tracing::warn!(destination = %name, reason = why, topic = %self.topic, "Destination parked; its events go to its retry topic.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::settings::Protocol;
    use crate::sink::{self, SinkSpec};

    #[test]
    fn retry_topic_names_are_valid_kafka_names() {
        assert_eq!(
            retry_topic_name("plura.forwarder.retry", "soc-a_1.x"),
            "plura.forwarder.retry.soc-a_1.x"
        );
        let odd = retry_topic_name("r", "서버 A/b");
        assert!(
            odd.starts_with("r.___A_b-") && odd.len() == "r.___A_b-".len() + 8,
            "{odd}"
        );
        assert_ne!(
            retry_topic_name("r", "서버"),
            retry_topic_name("r", "갑을"),
            "no shared topic"
        );
    }

    #[tokio::test]
    async fn a_down_destination_parks_after_the_confirmation_time_and_stays_parked() {
        // Nothing listens on port 1: every connection attempt is refused.
        let handle = sink::spawn(SinkSpec {
            name: "dead".into(),
            protocol: Protocol::Tcp,
            address: "127.0.0.1:1".into(),
            queue_events: 8,
            batch_max_events: 4,
            batch_max_bytes: 1 << 16,
            batch_linger: Duration::from_millis(1),
            connect_timeout: Duration::from_secs(1),
            tls: None,
        });
        let sender = handle.sender();
        let mut gate = ParkGate::new(
            "dead",
            "r.dead".into(),
            ParkFlag::default(),
            Duration::from_secs(5),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sender.is_down() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sender.is_down(), "refused connections make the sink down");
        assert!(
            !gate.parked("dead", &sender),
            "not at the first sight of it"
        );
        tokio::time::sleep(DOWN_CONFIRM + Duration::from_millis(20)).await;
        assert!(
            gate.parked("dead", &sender),
            "down for DOWN_CONFIRM: parked"
        );
        assert!(gate.flag.is_parked());
        assert!(
            gate.flag.refresh("dead", &sender),
            "still down: stays parked"
        );
        handle.close(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn a_full_queue_parks_after_park_after_unless_it_had_room() {
        let mut gate = ParkGate::new(
            "slow",
            "r.slow".into(),
            ParkFlag::default(),
            Duration::from_millis(50),
        );
        let first = gate.full_wait();
        assert!(first > Duration::ZERO && first <= Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(30)).await;
        gate.had_room();
        assert!(
            gate.full_wait() > Duration::from_millis(30),
            "room resets the clock"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            gate.full_wait(),
            Duration::ZERO,
            "full for park_after: park now"
        );
        gate.park("slow", "slow");
        assert!(gate.flag.is_parked());
        assert!(!gate.flag.park(), "already parked");
    }

    #[test]
    fn parking_again_soon_after_an_unpark_doubles_the_hold() {
        let flag = ParkFlag::default();
        assert!(flag.park());
        assert_eq!(flag.hold(), Duration::from_millis(HOLD_MIN_MS));
        // Unpark by hand (as refresh does once healthy), then park again at once.
        flag.0.parked.store(false, Ordering::Release);
        flag.0.since_ms.store(now_ms(), Ordering::Release);
        assert!(flag.park());
        assert_eq!(flag.hold(), Duration::from_millis(2 * HOLD_MIN_MS));
        for _ in 0..10 {
            flag.0.parked.store(false, Ordering::Release);
            assert!(flag.park());
        }
        assert_eq!(flag.hold(), Duration::from_millis(HOLD_MAX_MS), "capped");
    }
}
