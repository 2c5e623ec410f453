//! Shared pieces of the integration tests: the mock Kafka, sample events, receivers and a
//! pipeline run that stops when told. Loopback only; every wait is bounded.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use plura_forwarder::config::{self, Config};
use plura_forwarder::pipeline::{self, RunOptions};
use plura_forwarder::sample;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const TOPICS: [&str; 3] = ["plura.detect", "plura.defense", "plura.usage"];
pub const PARTITIONS: i32 = 3;

/// The mock cluster with the three event topics and the dead-letter topic.
pub fn start_kafka() -> plura_forwarder::source::embedded::EmbeddedKafka {
    let mut topics: Vec<(&str, i32)> = TOPICS.iter().map(|t| (*t, PARTITIONS)).collect();
    topics.push(("plura.forwarder.dlq", 1));
    plura_forwarder::source::embedded::EmbeddedKafka::start(&topics).expect("mock cluster")
}

/// A TCP RFC 5424 destination with the raw log (so that frames carry their sample id).
pub fn dest(name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "[[syslog]]\nname = \"{name}\"\nprotocol = \"tcp\"\nformat = \"rfc5424\"\ninclude_raw_log = true\naddress = \"{addr}\"\n"
    )
}

/// Waits until the group's committed offsets add up to `total` (or `within` passes); returns
/// the sum.
pub async fn wait_committed(brokers: &str, group: &str, total: u64, within: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let done = committed_total(brokers, group);
        if done as u64 == total || tokio::time::Instant::now() > deadline {
            return done as u64;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `[kafka]` and `[forwarder]` tables of a test config; destinations are appended.
pub fn base_toml(brokers: &str, group: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
[kafka.properties]
"session.timeout.ms" = "6000"
[forwarder]
hostname = "fwd-test"
commit_interval_ms = 100
shutdown_grace_s = 5
[admin]
listen = "127.0.0.1:0"
"#
    )
}

pub fn config(toml: &str) -> Config {
    match config::from_toml_str(toml) {
        Ok(c) => c,
        Err(e) => panic!("test config refused:\n{e}\n{toml}"),
    }
}

/// Sample events `seqs`, as (seq, JSON). Usage layouts carry no raw log, so their user
/// name carries the sequence number instead (see [`seq_of`]).
pub fn samples(seqs: std::ops::Range<u64>) -> Vec<(u64, Value)> {
    sample::events(seqs.end as usize, 120)
        .filter(|(s, _)| seqs.contains(s))
        .map(|(s, mut ev)| {
            if ev["logType"] == "usage" {
                ev["userName"] = Value::String(format!("user-{s}"));
            }
            (s, ev)
        })
        .collect()
}

/// Produces each event to `plura.<logType>`, keyed by its group, and waits for every ack.
pub async fn produce(brokers: &str, events: &[(u64, Value)]) {
    produce_lingering(brokers, events, 5).await
}

/// [`produce`] with the producer's `linger.ms`: a long one makes record batches of thousands
/// of events (up to librdkafka's default `batch.size` of 1 MB), and the mock cluster answers a
/// fetch with one batch per partition.
pub async fn produce_lingering(brokers: &str, events: &[(u64, Value)], linger_ms: u32) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms.to_string())
        .create()
        .expect("producer");
    let mut futs = Vec::new();
    for (_, ev) in events {
        let payload = serde_json::to_vec(ev).unwrap();
        let topic = format!("plura.{}", ev["logType"].as_str().unwrap());
        let key = ev["groupId"].as_str().unwrap().to_owned();
        let rec = FutureRecord::to(&topic).payload(&payload).key(&key);
        futs.push(p.send_result(rec).map_err(|(e, _)| e).expect("enqueue"));
    }
    for f in futs {
        f.await.expect("delivery future").expect("produced");
    }
}

/// Produces raw payloads to one partition of a topic (one key), in order.
pub async fn produce_raw(brokers: &str, topic: &str, payloads: &[&[u8]]) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    for payload in payloads {
        p.send(
            FutureRecord::<[u8], [u8]>::to(topic)
                .payload(payload)
                .key(b"one-partition"),
            Duration::from_secs(5),
        )
        .await
        .expect("produced");
    }
}

/// A long backlog: `total` sample events produced in large record batches (each fetch brings
/// thousands, so the consumer's queue stays ahead of the pipeline), all checked still in Kafka.
/// Returns the config of `group` forwarding them to `to` through a 256-event queue.
pub async fn backlog_config(brokers: &str, group: &str, total: u64, to: SocketAddr) -> String {
    produce_lingering(brokers, &samples(0..total), 1000).await;
    let highs = assert_nothing_deleted(brokers);
    assert_eq!(highs.values().sum::<i64>() as u64, total);
    base_toml(brokers, group).replace("[forwarder]\n", "[forwarder]\nqueue_events = 256\n")
        + &dest("siem", to)
}

/// Runs the pipeline until `until` resolves, then stops it and waits for the drain.
///
/// The run is a task of its own, as in the binary (where a signal task cancels the token):
/// joined in one task with `until`, a run busy with a backlog would not let `until` be polled
/// until the backlog was gone.
pub async fn run_until<F: std::future::Future<Output = ()>>(cfg: Config, until: F) {
    let stop = CancellationToken::new();
    let run = tokio::spawn(pipeline::run(
        cfg,
        RunOptions {
            shutdown: stop.clone(),
            ..RunOptions::default()
        },
    ));
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        until.await;
        stop.cancel();
        run.await
    })
    .await
    .expect("pipeline run bounded in time");
    result.expect("pipeline task").expect("pipeline run");
}

/// The mock cluster silently drops old data beyond 5 MiB per partition: check that nothing
/// the test counts on was deleted (every partition still starts at offset 0) and return the
/// high watermarks.
pub fn assert_nothing_deleted(brokers: &str) -> BTreeMap<(String, i32), i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    let mut highs = BTreeMap::new();
    for t in TOPICS {
        for p in 0..PARTITIONS {
            let (low, high) = c
                .fetch_watermarks(t, p, Duration::from_secs(5))
                .expect("watermarks");
            assert_eq!(
                low, 0,
                "{t}/{p}: the mock cluster deleted data; the test would count on lost events"
            );
            highs.insert((t.to_owned(), p), high);
        }
    }
    highs
}

/// The group's committed offsets for every partition (`None` = nothing committed).
pub fn committed(brokers: &str, group: &str) -> BTreeMap<(String, i32), Option<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for t in TOPICS {
        for p in 0..PARTITIONS {
            tpl.add_partition(t, p);
        }
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(5))
        .expect("committed offsets");
    let out = got
        .elements()
        .iter()
        .map(|e| {
            let o = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            ((e.topic().to_owned(), e.partition()), o)
        })
        .collect();
    // The list holds references into the client: drop it first (librdkafka's destroy waits).
    drop(got);
    out
}

/// How many events the group has committed on the event topics (nothing committed counts 0).
pub fn committed_total(brokers: &str, group: &str) -> i64 {
    committed(brokers, group)
        .values()
        .map(|o| o.unwrap_or(0))
        .sum()
}

/// The sample sequence number a frame carries: in its raw log (`…?id=<seq> HTTP/1.1`), or
/// for a usage log in its user name (`user-<seq>`). CEF escapes the `=` as `\=`.
pub fn seq_of(frame: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(frame);
    let at = match (text.find("?id="), text.find("?id\\=")) {
        (Some(i), _) => i + 4,
        (None, Some(i)) => i + 5,
        (None, None) => text.find("user-")? + 5,
    };
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A bare HTTP/1.1 request to the admin listener on 127.0.0.1; returns (status, body).
pub fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to admin");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut r = String::new();
    s.read_to_string(&mut r).expect("response");
    let status = r
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = r
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
