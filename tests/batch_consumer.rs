//! The service's batch consumer against librdkafka's mock cluster: messages come out whole
//! (key, payload, headers, timestamp), watermarks become committed offsets, and a rebalance
//! served inside a batch call moves partitions with their trackers and commits on revoke.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use plura_forwarder::source::{
    consumer_config, embedded::EmbeddedKafka, BatchConsumer, Msg, Trackers,
};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

/// Produces `n` records numbered from `from` (payload `{"i":N}`, key `kN%7`, one header).
async fn produce(bootstrap: &str, topic: &str, from: usize, n: usize) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for i in from..from + n {
        let payload = format!("{{\"i\":{i}}}");
        let key = format!("k{}", i % 7);
        let headers = OwnedHeaders::new().insert(Header {
            key: "seq",
            value: Some(&payload),
        });
        p.send(
            FutureRecord::to(topic)
                .payload(&payload)
                .key(&key)
                .headers(headers)
                .timestamp(1_700_000_000_000 + i as i64),
            Duration::from_secs(5),
        )
        .await
        .expect("produce");
    }
}

fn consumer(bootstrap: &str, group: &str, topic: &str) -> Arc<BatchConsumer> {
    let props = BTreeMap::from([
        ("session.timeout.ms".to_owned(), "6000".to_owned()),
        ("statistics.interval.ms".to_owned(), "200".to_owned()),
    ]);
    let cfg = consumer_config(bootstrap, group, 100, &props);
    BatchConsumer::subscribe(&cfg, &[topic.to_owned()], Arc::new(Trackers::default()))
        .expect("consumer")
}

/// The number a message carries in its payload.
fn number(m: &Msg<'_>) -> usize {
    let p = std::str::from_utf8(m.payload().expect("payload")).expect("utf-8");
    p.trim_start_matches("{\"i\":")
        .trim_end_matches('}')
        .parse()
        .expect("number")
}

/// Takes one batch (waiting at most 100 ms), finishes every message (its ack done) and returns
/// (partition, offset, number) of each.
async fn take(c: &BatchConsumer) -> Vec<(i32, i64, usize)> {
    let mut batch = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(100), c.ready(&mut batch, 64)).await;
    let mut seen = Vec::new();
    for m in &batch {
        assert!(m.error().is_none(), "consume error {:?}", m.error());
        let tracker = c
            .trackers()
            .current(m.topic(), m.partition())
            .expect("an assigned partition's message");
        tracker
            .dispatch(m.offset(), 1)
            .into_iter()
            .for_each(|a| a.done());
        seen.push((m.partition(), m.offset(), number(m)));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_come_whole_in_batches_and_in_offset_order() {
    let kafka = EmbeddedKafka::start(&[("whole", 2)]).expect("mock cluster");
    let bootstrap = kafka.bootstrap_servers();
    produce(&bootstrap, "whole", 0, 200).await;
    let c = consumer(&bootstrap, "whole-group", "whole");
    let mut batch = Vec::new();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    let (mut got, mut largest) = (BTreeSet::new(), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 200 && std::time::Instant::now() < deadline {
        batch.clear();
        let n = tokio::time::timeout(Duration::from_secs(1), c.ready(&mut batch, 64))
            .await
            .unwrap_or(0);
        largest = largest.max(n);
        for m in &batch {
            let i = number(m);
            assert_eq!(m.key(), Some(format!("k{}", i % 7).as_bytes()));
            assert_eq!(
                m.timestamp().to_millis(),
                Some(1_700_000_000_000 + i as i64)
            );
            let h = m.headers().expect("headers");
            assert_eq!(h.count(), 1);
            let seq = h.get(0);
            assert_eq!(
                (seq.key, seq.value),
                ("seq", Some(format!("{{\"i\":{i}}}").as_bytes()))
            );
            assert_eq!(m.topic(), "whole");
            let before = last.insert(m.partition(), m.offset());
            assert!(before.is_none_or(|b| b < m.offset()), "offsets go forward");
            assert!(got.insert(i), "message {i} twice");
        }
    }
    assert_eq!(got.len(), 200, "every message, once");
    assert!(
        largest > 1,
        "messages ready together come in one call (largest batch {largest})"
    );
    drop(batch);
}

/// A second member joins while the first consumes: the cooperative rebalance is served inside
/// the first's batch calls (its callback commits what is finished and drops the partition's
/// tracker), the newcomer starts at the committed offset, and new messages go to exactly one
/// of them each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_inside_a_batch_call_moves_a_partition_with_its_committed_offset() {
    let kafka = EmbeddedKafka::start(&[("moves", 2)]).expect("mock cluster");
    let bootstrap = kafka.bootstrap_servers();
    produce(&bootstrap, "moves", 0, 100).await;
    let a = consumer(&bootstrap, "moves-group", "moves");
    let mut first = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while first.len() < 100 && std::time::Instant::now() < deadline {
        first.extend(take(&a).await.into_iter().map(|(_, _, i)| i));
    }
    assert_eq!(first.len(), 100);
    assert_eq!(a.trackers().all().len(), 2);

    let b = consumer(&bootstrap, "moves-group", "moves");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut late = Vec::new();
    while (a.trackers().all().len() != 1 || b.trackers().all().len() != 1)
        && std::time::Instant::now() < deadline
    {
        late.extend(take(&a).await);
        late.extend(take(&b).await);
    }
    assert!(late.is_empty(), "nothing was left to read: {late:?}");
    let (pa, pb) = (a.trackers().all(), b.trackers().all());
    assert_eq!((pa.len(), pb.len()), (1, 1), "one partition each");
    assert_ne!(pa[0].partition(), pb[0].partition());

    produce(&bootstrap, "moves", 100, 100).await;
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while to_a.len() + to_b.len() < 100 && std::time::Instant::now() < deadline {
        to_a.extend(take(&a).await);
        to_b.extend(take(&b).await);
    }
    let numbers: BTreeSet<usize> = to_a.iter().chain(&to_b).map(|(_, _, i)| *i).collect();
    assert_eq!(to_a.len() + to_b.len(), 100, "each new message once");
    assert_eq!(numbers, (100..200).collect(), "only the new messages");
    assert!(to_a.iter().all(|(p, _, _)| *p == pa[0].partition()));
    assert!(to_b.iter().all(|(p, _, _)| *p == pb[0].partition()));
    assert!(
        !to_a.is_empty() && !to_b.is_empty(),
        "both partitions got some"
    );

    // Lag comes from the statistics callback: each member reports its own partition only.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (a.trackers().lag().len() != 1 || b.trackers().lag().len() != 1)
        && std::time::Instant::now() < deadline
    {
        take(&a).await;
        take(&b).await;
    }
    let (la, lb) = (a.trackers().lag(), b.trackers().lag());
    assert_eq!(la.len(), 1, "{la:?}");
    assert_eq!(lb.len(), 1, "{lb:?}");
    assert_eq!(la[0].0 .1, pa[0].partition());
    assert_eq!(lb[0].0 .1, pb[0].partition());
    drop(b);
    drop(a);
}
