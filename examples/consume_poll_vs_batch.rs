//! How much CPU per message librdkafka's batch consume would save over rdkafka's poll of one
//! message at a time: the measurement behind the README's next step "take messages from
//! librdkafka in batches". Not part of the product.
//!
//! `cargo run --release --example consume_poll_vs_batch` produces 200,000 messages of 200 bytes
//! into 16 partitions of the mock cluster (2.5 MB each, under its 5 MiB per partition), then
//! reads them all four times with a fresh consumer (manual assignment, the product's fetch
//! settings), alternating the two ways, and prints the process's CPU time per message (the
//! mock broker, in the same process, serves the same fetches either way).

use std::time::{Duration, Instant};

use plura_forwarder::malloc::cpu_seconds;
use plura_forwarder::source::embedded::EmbeddedKafka;
use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const MESSAGES: usize = 200_000;
const PARTITIONS: i32 = 16;
const BATCH: usize = 64;

fn consumer(brokers: &str, round: usize) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("poll-vs-batch-{round}"))
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "10")
        .set("queued.min.messages", "10000")
        .set("fetch.max.bytes", "1048576")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("t", p, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    c
}

/// One message at a time, as the product's stream takes them.
fn by_poll(c: &BaseConsumer) -> usize {
    let mut got = 0;
    while got < MESSAGES {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            got += usize::from(m.payload().is_some());
        }
    }
    got
}

/// Up to [`BATCH`] messages per call from the consumer queue.
fn by_batch(c: &BaseConsumer) -> usize {
    let mut got = 0;
    let mut buf: Vec<*mut rd::rd_kafka_message_t> = vec![std::ptr::null_mut(); BATCH];
    // SAFETY: the queue is the consumer's own (valid while `c` lives, destroyed once below);
    // `rd_kafka_consume_batch_queue` writes at most `BATCH` message pointers into `buf`, each
    // read once and destroyed once.
    unsafe {
        let q = rd::rd_kafka_queue_get_consumer(c.client().native_ptr());
        while got < MESSAGES {
            let n = rd::rd_kafka_consume_batch_queue(q, 100, buf.as_mut_ptr(), BATCH);
            assert!(n >= 0, "batch consume failed");
            for &m in &buf[..n as usize] {
                let ok = (*m).err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
                got += usize::from(ok && !(*m).payload.is_null());
                rd::rd_kafka_message_destroy(m);
            }
        }
        rd::rd_kafka_queue_destroy(q);
    }
    got
}

fn main() {
    let kafka = EmbeddedKafka::start(&[("t", PARTITIONS)]).expect("mock cluster");
    let brokers = kafka.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let payload = [b'x'; 200];
    for i in 0..MESSAGES {
        let partition = (i % PARTITIONS as usize) as i32;
        while producer
            .send(
                BaseRecord::<(), _>::to("t")
                    .payload(&payload[..])
                    .partition(partition),
            )
            .is_err()
        {
            producer.poll(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    for round in 0..8 {
        let c = consumer(&brokers, round);
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let (way, got) = if round % 2 == 0 {
            ("poll ", by_poll(&c))
        } else {
            ("batch", by_batch(&c))
        };
        let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
        println!(
            "{way}: {got} messages, {:.3} µs CPU per message, {:.0} messages/s",
            cpu * 1e6 / got as f64,
            got as f64 / wall
        );
    }
}
