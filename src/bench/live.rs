//! The live input of the latency and memory runs: sample events produced at a fixed rate.
//!
//! The harness shares a 2-core machine with the forwarder it measures, so its producer is kept
//! light: records go to librdkafka in chunks through `rd_kafka_produce_batch` on one topic
//! handle (one topic lock and one clock reading per chunk, where rdkafka's `send` takes the
//! client's topic lock and reads two clocks per record), their payloads are not copied (they
//! live in [`Producing`] until the producer is gone), and only every [`SAMPLE`]th record
//! carries its send time for the send → acknowledgement figures (no allocation per record).

use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::producer::{Producer as _, ProducerContext, ThreadedProducer, PARTITION_UA};
use rdkafka::ClientConfig;

use crate::sample;

/// What [`produce_live`] did.
#[derive(Debug, Clone, Default)]
pub(super) struct Live {
    /// Events produced (every one acknowledged by the broker).
    pub produced: u64,
    /// Events produced per second (achieved).
    pub rate: f64,
    /// From the `send` call (the Kafka timestamp) to the broker's acknowledgement, in ms: p50
    /// and p99. The forwarder cannot see an event before the broker has it, so this part of
    /// the end-to-end latency happens before the forwarder.
    pub ack_p50_ms: f64,
    /// 99th percentile of the same.
    pub ack_p99_ms: f64,
}

/// One record in this many carries its send time to the delivery callback.
const SAMPLE: u64 = 16;

/// Records handed to librdkafka per call. They share one Kafka timestamp, read at the start of
/// the call: a chunk takes well under a millisecond, and any error of it makes the measured
/// latency longer, never shorter.
const CHUNK: usize = 256;

/// Records, in the delivery callback (the producer's poll thread), how long each sampled
/// record took from its chunk's `send` to the broker's acknowledgement.
struct AckTimes {
    start: Instant,
    ms: Mutex<Vec<f32>>,
    failed: AtomicU64,
}

impl rdkafka::ClientContext for AckTimes {}

impl ProducerContext for AckTimes {
    /// 0 for a record not sampled, else 1 + nanoseconds from `start` to its send.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, sent: usize) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if sent == 0 {
            return;
        }
        let sent = Duration::from_nanos(sent as u64 - 1);
        let ms = self.start.elapsed().saturating_sub(sent).as_secs_f32() * 1000.0;
        self.ms.lock().unwrap_or_else(|p| p.into_inner()).push(ms);
    }
}

/// A topic handle of the producer's client.
struct Topic(*mut rd::rd_kafka_topic_t);

// SAFETY: librdkafka's topic handles may be used from any thread.
unsafe impl Send for Topic {}

impl Drop for Topic {
    fn drop(&mut self) {
        // SAFETY: made by `rd_kafka_topic_new` and destroyed once, before its client
        // (`Producing` drops its fields in order).
        unsafe { rd::rd_kafka_topic_destroy(self.0) }
    }
}

/// The producer with what its queued records point into, dropped in this order: the topic
/// handle before its client, the client (which purges what it still holds) before the
/// payloads.
struct Producing {
    topic: Topic,
    producer: ThreadedProducer<AckTimes>,
    payloads: Vec<Vec<u8>>,
}

impl Producing {
    fn new(brokers: &str, topic: &str) -> anyhow::Result<Self> {
        let producer: ThreadedProducer<AckTimes> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "2000000")
            .create_with_context(AckTimes {
                start: Instant::now(),
                ms: Mutex::default(),
                failed: AtomicU64::new(0),
            })?;
        let name = CString::new(topic)?;
        // SAFETY: a live client and a NUL-terminated name; a null configuration means the
        // client's defaults.
        let rkt = unsafe {
            rd::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        anyhow::ensure!(!rkt.is_null(), "no topic handle for {topic}");
        Ok(Producing {
            topic: Topic(rkt),
            producer,
            payloads: (0..240u64).map(sample::harness_event).collect(),
        })
    }

    /// Queues records `from..to` (at most [`CHUNK`]) with one call.
    fn produce(&self, from: u64, to: u64) -> anyhow::Result<()> {
        let keys: Vec<[u8; 8]> = (from..to).map(u64::to_le_bytes).collect();
        let sent = self.producer.context().start.elapsed().as_nanos() as usize + 1;
        let mut msgs: Vec<rd::rd_kafka_message_t> = (from..to)
            .zip(&keys)
            .map(|(n, key)| {
                let payload = &self.payloads[(n % self.payloads.len() as u64) as usize];
                rd::rd_kafka_message_t {
                    err: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                    rkt: std::ptr::null_mut(),
                    partition: PARTITION_UA,
                    payload: payload.as_ptr().cast_mut().cast::<c_void>(),
                    len: payload.len(),
                    key: key.as_ptr().cast_mut().cast::<c_void>(),
                    key_len: key.len(),
                    offset: 0,
                    _private: (if n % SAMPLE == 0 { sent } else { 0 }) as *mut c_void,
                }
            })
            .collect();
        let count = msgs.len() as i32;
        // SAFETY: `msgs` is valid for the call; keys are copied by librdkafka; without
        // `RD_KAFKA_MSG_F_COPY`/`FREE` the payloads are referenced, and they live in `self`
        // until after the client is destroyed.
        let queued = unsafe {
            rd::rd_kafka_produce_batch(self.topic.0, PARTITION_UA, 0, msgs.as_mut_ptr(), count)
        };
        if queued != count {
            let err = msgs
                .iter()
                .find(|m| m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
                .map(|m| rdkafka::error::RDKafkaErrorCode::from(m.err));
            anyhow::bail!("producing: {queued} of {count} records queued ({err:?})");
        }
        Ok(())
    }
}

/// Produces sample events to `topic` at `rate` events/s for `secs` seconds and waits until the
/// broker has acknowledged every one.
///
/// # Errors
/// When the producer cannot be created, refuses a record, or a record is not delivered.
pub(super) async fn produce_live(
    brokers: &str,
    topic: &str,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Live> {
    let p = Producing::new(brokers, topic)?;
    // 100 ticks a second, each producing its share; a tick that runs late catches up.
    let start = Instant::now();
    let total = rate * secs;
    let mut produced = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while produced < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while produced < due {
            let to = due.min(produced + CHUNK as u64);
            p.produce(produced, to)?;
            produced = to;
        }
    }
    let rate = produced as f64 / start.elapsed().as_secs_f64();
    let (flushed, p) =
        tokio::task::spawn_blocking(move || (p.producer.flush(Duration::from_secs(60)), p)).await?;
    flushed?;
    let ctx = p.producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} records were not delivered");
    let mut ms = std::mem::take(&mut *ctx.ms.lock().unwrap_or_else(|p| p.into_inner()));
    ms.sort_by(f32::total_cmp);
    let at = |q: f64| {
        let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len().max(1)) - 1;
        ms.get(i).map_or(f64::NAN, |&v| f64::from(v))
    };
    Ok(Live {
        produced,
        rate,
        ack_p50_ms: at(0.5),
        ack_p99_ms: at(0.99),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message};

    use crate::sample;
    use crate::source::embedded::EmbeddedKafka;

    /// Every record arrives once, with its own key and the payload the FFI call pointed at;
    /// sampled records give acknowledgement times.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_record_arrives_once_with_its_key_and_payload() {
        let kafka = EmbeddedKafka::start(&[("live", 3)]).expect("mock cluster");
        let brokers = kafka.bootstrap_servers();
        // 3,000 records in 1 s: ticks of 30, in chunks that are not all full.
        let live = super::produce_live(&brokers, "live", 3_000, 1)
            .await
            .expect("produced");
        assert_eq!(live.produced, 3_000);
        assert!(live.ack_p99_ms.is_finite() && live.ack_p99_ms >= live.ack_p50_ms);

        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "live-check")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        c.subscribe(&["live"]).expect("subscribe");
        let payloads: Vec<Vec<u8>> = (0..240u64).map(sample::harness_event).collect();
        let mut keys = HashSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while keys.len() < 3_000 && std::time::Instant::now() < deadline {
            let Some(m) = c.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.expect("message");
            let key = u64::from_le_bytes(m.key().expect("key").try_into().expect("8 bytes"));
            assert!(keys.insert(key), "record {key} arrived twice");
            let want = &payloads[(key % payloads.len() as u64) as usize];
            assert_eq!(m.payload(), Some(&want[..]), "payload of record {key}");
        }
        assert_eq!(keys.len(), 3_000);
        assert!(keys.iter().all(|&k| k < 3_000));
    }
}
