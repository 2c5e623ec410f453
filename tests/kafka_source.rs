//! The Kafka source against librdkafka's mock cluster: watermarks become committed offsets,
//! and the committed offset is exactly where the next consumer starts.

use std::collections::BTreeMap;
use std::time::Duration;

use plura_forwarder::source::{build_consumer, consumer_config, embedded::EmbeddedKafka};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset};

async fn produce(bootstrap: &str, topic: &str, n: usize) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for i in 0..n {
        let payload = format!("{{\"i\":{i}}}");
        let key = format!("k{}", i % 7);
        p.send(
            FutureRecord::to(topic).payload(&payload).key(&key),
            Duration::from_secs(5),
        )
        .await
        .expect("produce");
    }
}

fn props() -> BTreeMap<String, String> {
    BTreeMap::from([("session.timeout.ms".to_owned(), "6000".to_owned())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_events_are_committed_and_the_next_run_starts_after_them() {
    let kafka = EmbeddedKafka::start(&[("src", 2)]).expect("mock cluster");
    let bootstrap = kafka.bootstrap_servers();
    produce(&bootstrap, "src", 100).await;

    let cfg = consumer_config(&bootstrap, "g1", 100, &props());
    let src = build_consumer(&cfg, &["src".to_owned()]).expect("consumer");
    let mut seen = 0;
    let mut held = Vec::new();
    while seen < 100 {
        let msg = tokio::time::timeout(Duration::from_secs(20), src.consumer.recv())
            .await
            .expect("message within 20 s")
            .expect("no consume error");
        let tracker = src.trackers.get(msg.topic(), msg.partition());
        let mut acks = tracker.dispatch(msg.offset(), 1);
        // Hold back the acks of partition 1's offsets >= 10: its watermark must stop at 9.
        if msg.partition() == 1 && msg.offset() >= 10 {
            held.append(&mut acks);
        }
        acks.into_iter().for_each(|a| a.done());
        seen += 1;
    }
    if let Err(e) = src.consumer.commit_consumer_state(CommitMode::Sync) {
        // The auto-commit (every 100 ms here) may already have committed everything stored.
        assert!(
            plura_forwarder::source::is_no_offset_error(&e),
            "commit: {e}"
        );
    }
    let committed = src
        .consumer
        .committed(Duration::from_secs(5))
        .expect("committed");
    let c0 = committed.find_partition("src", 0).expect("p0").offset();
    let c1 = committed.find_partition("src", 1).expect("p1").offset();
    let t0 = src.trackers.get("src", 0).done_upto().expect("p0 done");
    // librdkafka stores offset + 1: the next offset to read.
    assert_eq!(c0, Offset::Offset(t0 + 1));
    assert_eq!(
        c1,
        Offset::Offset(10),
        "partition 1 stops before the first unfinished event"
    );
    drop(held);
    src.consumer.unsubscribe();
    // A partition list can hold references into the client, and librdkafka's destroy waits
    // for them: it must go before the consumer does.
    drop(committed);
    drop(src);

    // A new member of the same group resumes exactly at the committed offsets.
    let src2 = build_consumer(&cfg, &["src".to_owned()]).expect("consumer 2");
    let mut first = BTreeMap::new();
    while first.is_empty() {
        let msg = tokio::time::timeout(Duration::from_secs(30), src2.consumer.recv())
            .await
            .expect("message within 30 s")
            .expect("no consume error");
        first.entry(msg.partition()).or_insert(msg.offset());
        if msg.partition() == 1 {
            break;
        }
    }
    if let Some(o) = first.get(&1) {
        assert_eq!(*o, 10);
    }
    if let Some(o) = first.get(&0) {
        assert_eq!(Offset::Offset(*o), c0);
    }
}

/// `consumer_lag` is per owned partition, from librdkafka's statistics, and a partition that
/// moves to another member in a rebalance disappears from this member's lag at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_is_per_owned_partition_and_follows_a_rebalance() {
    let kafka = EmbeddedKafka::start(&[("lagt", 2)]).expect("mock cluster");
    let bootstrap = kafka.bootstrap_servers();
    produce(&bootstrap, "lagt", 100).await;
    let mut props = props();
    props.insert("statistics.interval.ms".to_owned(), "200".to_owned());
    let cfg = consumer_config(&bootstrap, "lag-group", 100, &props);

    let a = build_consumer(&cfg, &["lagt".to_owned()]).expect("consumer a");
    let mut per_partition = BTreeMap::new();
    for _ in 0..100 {
        let msg = tokio::time::timeout(Duration::from_secs(20), a.consumer.recv())
            .await
            .expect("message within 20 s")
            .expect("no consume error");
        *per_partition.entry(msg.partition()).or_insert(0i64) += 1;
        // Only the first 10 events of each partition are finished (and so committed).
        let acks = a
            .trackers
            .get(msg.topic(), msg.partition())
            .dispatch(msg.offset(), 1);
        if msg.offset() < 10 {
            acks.into_iter().for_each(|x| x.done());
        } else {
            drop(acks); // unfinished: the watermark stops before them
        }
    }
    if let Err(e) = a.consumer.commit_consumer_state(CommitMode::Sync) {
        // The auto-commit may already have committed everything stored.
        assert!(
            plura_forwarder::source::is_no_offset_error(&e),
            "commit: {e}"
        );
    }
    let want: Vec<((String, i32), i64)> = per_partition
        .iter()
        .map(|(p, n)| (("lagt".to_owned(), *p), n - 10))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while a.trackers.lag() != want && std::time::Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), a.consumer.recv()).await;
    }
    assert_eq!(
        a.trackers.lag(),
        want,
        "lag = high watermark - committed offset, per partition"
    );

    // A second member joins: one partition moves to it and leaves a's lag.
    let b = build_consumer(&cfg, &["lagt".to_owned()]).expect("consumer b");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (a.trackers.lag().len() != 1 || b.trackers.lag().len() != 1)
        && std::time::Instant::now() < deadline
    {
        let _ = tokio::time::timeout(Duration::from_millis(50), a.consumer.recv()).await;
        let _ = tokio::time::timeout(Duration::from_millis(50), b.consumer.recv()).await;
    }
    let (la, lb) = (a.trackers.lag(), b.trackers.lag());
    assert_eq!((la.len(), lb.len()), (1, 1), "a {la:?}, b {lb:?}");
    assert_ne!(
        la[0].0, lb[0].0,
        "each partition's lag is reported by its owner only"
    );
    let mut text = String::new();
    a.trackers.render_lag(&mut text);
    let moved = &lb[0].0;
    assert!(
        !text.contains(&format!("partition=\"{}\"", moved.1)),
        "{text}"
    );
    assert!(
        text.contains("# TYPE plura_forwarder_consumer_lag gauge"),
        "{text}"
    );
    drop(b);
    drop(a);
}
