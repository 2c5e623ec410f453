//! The ticket history on librdkafka's mock cluster: records survive a restart (loaded from the
//! beginning of the topic to its high watermark), replicas see each other's records through
//! the tail, and a process does not hold its own records twice. Every wait is bounded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use plura_forwarder::source::embedded::EmbeddedKafka;
use plura_forwarder::ticket::{History, HistoryRecord};

const TOPIC: &str = "plura.forwarder.tickets";
const LOAD: Duration = Duration::from_secs(10);

fn rec(i: u32, outcome: &str) -> HistoryRecord {
    HistoryRecord {
        time: format!("2026-11-30T01:00:{i:02}.000Z"),
        ticket: "jira-soc".into(),
        system: "jira".into(),
        event_id: format!("e{i}"),
        key: if outcome == "created" {
            format!("SEC-{i}")
        } else {
            String::new()
        },
        url: if outcome == "created" {
            format!("https://x/browse/SEC-{i}")
        } else {
            String::new()
        },
        id: (outcome == "created").then(|| format!("1000{i}")),
        project: "SEC".into(),
        outcome: outcome.into(),
        origin: "auto".into(),
        error: (outcome == "failed").then(|| "jira rejected the ticket: HTTP 400".into()),
        status: (outcome == "failed").then_some(400),
        attempts: 1,
        record_id: String::new(),
    }
}

fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn ids(h: &History) -> Vec<String> {
    h.list(100).into_iter().map(|r| r.event_id).collect()
}

#[test]
fn history_survives_a_restart_and_is_shared_by_replicas() {
    let kafka = EmbeddedKafka::start(&[(TOPIC, 2)]).expect("mock cluster");
    let brokers = kafka.bootstrap_servers();
    let props = BTreeMap::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    {
        let h = History::start(&brokers, &props, TOPIC, 100, LOAD).expect("history");
        assert!(h.is_empty());
        rt.block_on(async {
            h.record(rec(0, "created")).await;
            h.record(rec(1, "failed")).await;
            h.record(rec(2, "created")).await;
        });
        assert_eq!(ids(&h), ["e2", "e1", "e0"]);
        // Give the tail time to read its own records back: they must not be held twice.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(h.len(), 3);
    } // stopped and dropped: the "restart"

    let h = History::start(&brokers, &props, TOPIC, 100, LOAD).expect("history after restart");
    assert_eq!(
        ids(&h),
        ["e2", "e1", "e0"],
        "loaded from the topic, newest first"
    );
    let first = &h.list(100)[2];
    assert_eq!(
        (first.key.as_str(), first.outcome.as_str()),
        ("SEC-0", "created")
    );
    assert!(h.was_created("jira-soc", "e0") && h.was_created("jira-soc", "e2"));
    assert!(!h.was_created("jira-soc", "e1"), "failed is not created");
    let failed = &h.list(100)[1];
    assert_eq!(failed.status, Some(400));
    assert_eq!(h.list(2).len(), 2);

    // Another replica's ticket reaches this one through the tail.
    let replica = History::start(&brokers, &props, TOPIC, 100, LOAD).expect("replica");
    assert_eq!(replica.len(), 3);
    rt.block_on(replica.record(rec(3, "created")));
    assert!(
        wait_until(LOAD, || h.was_created("jira-soc", "e3")),
        "the replica's record arrived: {:?}",
        ids(&h)
    );
    assert_eq!(ids(&h), ["e3", "e2", "e1", "e0"]);

    // A small ring keeps the newest.
    let small = History::start(&brokers, &props, TOPIC, 2, LOAD).expect("small");
    assert_eq!(ids(&small), ["e3", "e2"]);

    drop(small);
    drop(replica);
    drop(h);
    drop(rt);
    drop(kafka);
}

#[test]
fn a_missing_topic_starts_empty() {
    let kafka = EmbeddedKafka::start(&[("other", 1)]).expect("mock cluster");
    let h = History::start(
        &kafka.bootstrap_servers(),
        &BTreeMap::new(),
        "plura.forwarder.tickets.absent",
        10,
        Duration::from_secs(3),
    )
    .expect("history");
    assert!(h.is_empty());
    drop(h);
    drop(kafka);
}
