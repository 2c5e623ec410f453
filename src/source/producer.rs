//! The forwarder's own Kafka producer (dead letters, parked events, ticket history): an async
//! `send` that completes on the broker's acknowledgement, over a `BaseProducer` whose delivery
//! reports are served by one thread.
//!
//! Why not rdkafka's `FutureProducer`: its poll thread polls 100 ms at a time, and rdkafka
//! rounds the time left down to whole milliseconds, so the last fraction of a millisecond of
//! every poll is a busy loop: about 1 % of a core per producer, forever, which was more than the
//! rest of an idle forwarder together. Polling a second at a time leaves a tenth of that.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::ClientContext;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::consumer::{is_shared_property, SourceError};

/// How long one poll of the delivery-report thread lasts (it returns at once on a report). A
/// dropped producer's thread, and so its librdkafka handle, ends within this.
const POLL: Duration = Duration::from_secs(1);
/// While librdkafka's local queue is full, `send` tries again this often.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(10);
/// [`Producer::send_retrying`]: the first wait after a failed send, doubling up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How long one attempt may wait for room in librdkafka's local queue.
const ATTEMPT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands each delivery report to the `send` waiting for it.
struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<oneshot::Sender<KafkaResult<()>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiter: Self::DeliveryOpaque) {
        // The waiter may have gone (its task was cancelled): nothing to tell then.
        let _ = waiter.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// A Kafka producer whose sends can be awaited. Cheap to clone; the last clone dropped stops
/// its poll thread (within a second) and so the librdkafka client.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    base: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Not joined: that would block the dropping (async) thread for up to a second.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One record to produce.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Value.
    pub payload: &'a [u8],
    /// Headers, if any.
    pub headers: Option<&'a OwnedHeaders>,
}

impl Producer {
    /// A producer with `config`, and its poll thread.
    ///
    /// # Errors
    /// When librdkafka refuses the configuration or the thread cannot start.
    pub fn new(config: &ClientConfig) -> Result<Self, SourceError> {
        let base: BaseProducer<Deliveries> =
            config
                .create_with_context(Deliveries)
                .map_err(|source| SourceError::Create {
                    what: "producer",
                    source,
                })?;
        let base = Arc::new(base);
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new()
            .name("kafka-producer-poll".into())
            .spawn({
                let (base, stop) = (Arc::clone(&base), Arc::clone(&stop));
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        base.poll(POLL);
                    }
                }
            })
            .map_err(|e| SourceError::Create {
                what: "producer poll thread",
                source: KafkaError::ClientCreation(e.to_string()),
            })?;
        Ok(Producer {
            inner: Arc::new(Inner { base, stop }),
        })
    }

    /// Produces `record` and waits for the broker's acknowledgement. While librdkafka's local
    /// queue is full it tries again for up to `queue_timeout`.
    ///
    /// # Errors
    /// The produce or delivery error (queue still full, unknown topic, message too large,
    /// timed out, purged at shutdown, …).
    pub async fn send(&self, record: Record<'_>, queue_timeout: Duration) -> KafkaResult<()> {
        let started = Instant::now();
        loop {
            let (tx, rx) = oneshot::channel();
            let mut base =
                BaseRecord::with_opaque_to(record.topic, Box::new(tx)).payload(record.payload);
            if let Some(k) = record.key {
                base = base.key(k);
            }
            if let Some(h) = record.headers {
                base = base.headers(h.clone());
            }
            match self.inner.base.send(base) {
                Ok(()) => {
                    // A dropped sender means librdkafka discarded the report (client destroyed).
                    return rx.await.unwrap_or(Err(KafkaError::Canceled));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if started.elapsed() < queue_timeout =>
                {
                    tokio::time::sleep(QUEUE_FULL_RETRY).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Sends `record` until the broker acknowledges it (`true`), waiting 100 ms doubling to
    /// 10 s between attempts and telling `failed` of each error, or until `stop` is cancelled
    /// (`false`: the record may not be in Kafka).
    pub async fn send_retrying(
        &self,
        record: Record<'_>,
        stop: &CancellationToken,
        mut failed: impl FnMut(&KafkaError),
    ) -> bool {
        let mut backoff = RETRY_FIRST;
        loop {
            match self.send(record, ATTEMPT_QUEUE_TIMEOUT).await {
                Ok(()) => return true,
                Err(e) => failed(&e),
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }
}

/// The producer for dead letters, parked events and ticket history: acknowledged by all
/// in-sync replicas.
///
/// # Errors
/// When librdkafka refuses the configuration.
pub fn build_producer(
    brokers: &str,
    properties: &BTreeMap<String, String>,
) -> Result<Producer, SourceError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "5");
    for (k, v) in properties.iter().filter(|(k, _)| is_shared_property(k)) {
        c.set(k, v);
    }
    Producer::new(&c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Header, Headers};
    use rdkafka::mocking::MockCluster;
    use rdkafka::Message;

    #[tokio::test]
    async fn send_completes_on_the_broker_ack_and_the_record_is_in_kafka() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("dlq", 1, 1).expect("topic");
        let brokers = cluster.bootstrap_servers();
        let producer = build_producer(&brokers, &BTreeMap::new()).expect("producer");
        let headers = OwnedHeaders::new().insert(Header {
            key: "reason",
            value: Some("invalid_json"),
        });
        for i in 0..3u8 {
            let record = Record {
                topic: "dlq",
                key: Some(b"group-1"),
                payload: &[b'x', i],
                headers: Some(&headers),
            };
            producer
                .send(record, Duration::from_secs(5))
                .await
                .expect("acknowledged");
        }

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "check")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&["dlq"]).expect("subscribe");
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < 3 && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let reason = m.headers().and_then(|h| h.iter().next()).map(|h| h.value);
                assert_eq!(reason, Some(Some(&b"invalid_json"[..])));
                assert_eq!(m.key(), Some(&b"group-1"[..]));
                got.push(m.payload().map(<[u8]>::to_vec));
            }
        }
        let want: Vec<_> = (0..3u8).map(|i| Some(vec![b'x', i])).collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_refused_record_is_an_error_not_a_hang() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("small", 1, 1).expect("topic");
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", cluster.bootstrap_servers())
            .set("message.max.bytes", "1000");
        let producer = Producer::new(&c).expect("producer");
        let record = Record {
            topic: "small",
            key: None,
            payload: &[0; 4000],
            headers: None,
        };
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            producer.send(record, Duration::from_secs(1)),
        )
        .await
        .expect("answered in time");
        assert!(
            matches!(
                res,
                Err(KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageSizeTooLarge
                ))
            ),
            "{res:?}"
        );
    }

    #[tokio::test]
    async fn a_full_local_queue_is_retried_until_the_queue_timeout() {
        // Nothing listens there: the first record waits in librdkafka's queue of one.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", format!("127.0.0.1:{port}"))
            .set("queue.buffering.max.messages", "1")
            .set("message.timeout.ms", "1500");
        let producer = Producer::new(&c).expect("producer");
        let record = Record {
            topic: "t",
            key: None,
            payload: b"x",
            headers: None,
        };
        let first = tokio::spawn({
            let producer = producer.clone();
            async move { producer.send(record, Duration::ZERO).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let second = producer.send(record, Duration::from_millis(300)).await;
        let waited = started.elapsed();
        assert!(
            matches!(
                second,
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
            ),
            "{second:?}"
        );
        assert!(
            waited >= Duration::from_millis(300),
            "retried for {waited:?}"
        );
        // The first one times out in librdkafka and says so.
        let first = tokio::time::timeout(Duration::from_secs(15), first)
            .await
            .expect("the first send answered")
            .expect("task");
        assert!(first.is_err(), "{first:?}");
    }

    #[tokio::test]
    async fn send_retrying_reports_each_failure_until_stopped_or_acknowledged() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("ok", 1, 1).expect("topic");
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", cluster.bootstrap_servers())
            .set("message.max.bytes", "1000");
        let producer = Producer::new(&c).expect("producer");
        let stop = CancellationToken::new();
        let record = |payload| Record {
            topic: "ok",
            key: None,
            payload,
            headers: None,
        };
        let mut failures = 0;
        assert!(
            producer
                .send_retrying(record(b"fits"), &stop, |_| failures += 1)
                .await
        );
        assert_eq!(failures, 0);
        // Refused every time: retried after 100 ms, then stopped after the second failure.
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            producer.send_retrying(record(&[0; 4000]), &stop, |e| {
                assert!(matches!(
                    e,
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
                ));
                failures += 1;
                if failures == 2 {
                    stop.cancel();
                }
            }),
        )
        .await
        .expect("stopped in time");
        assert!(!sent);
        assert_eq!(failures, 2, "one failure per attempt");
    }

    #[test]
    fn the_last_clone_dropped_ends_the_poll_thread_and_the_client() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", cluster.bootstrap_servers());
        let producer = Producer::new(&c).expect("producer");
        // Only the poll thread holds the client besides the producer.
        let client = Arc::downgrade(&producer.inner.base);
        let copy = producer.clone();
        drop(producer);
        std::thread::sleep(POLL * 2);
        assert!(client.upgrade().is_some(), "a clone still holds it");
        drop(copy);
        let deadline = Instant::now() + POLL * 3;
        while client.upgrade().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            client.upgrade().is_none(),
            "the poll thread still holds the client"
        );
    }
}
