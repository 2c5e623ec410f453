//! The ticket side sink against loopback mocks: exact rate-limit and dedup counts (sink counts
//! and `tickets_total` through a capturing recorder), 401 never retried, 429 waits for
//! `Retry-After`, 5xx retried then created, the router's `[ticket.when]`, manual tickets and
//! cross-replica dedup through the shared history. Every wait is bounded.

mod ticket_mock;

use std::sync::Arc;
use std::time::Duration;

use metrics::{SharedString, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::CompositeKey;
use plura_forwarder::config::{FilterConfig, Selection, TicketConfig, TicketSystem, TicketWhen};
use plura_forwarder::event::{decode, DecodeOptions};
use plura_forwarder::ticket::{
    EventOrigin, History, Offered, OutcomeCounts, SinkOptions, TicketError, TicketEvent,
    TicketHandle, TicketRouter, TicketSink,
};
use serde_json::json;
use ticket_mock::{event, secret_file, ticket, wait_until, Mock, Reply};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(15);

fn fast() -> SinkOptions {
    SinkOptions {
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
        ..SinkOptions::default()
    }
}

fn jira_ok() -> Reply {
    Reply::json(201, json!({"id": "10000", "key": "SEC-1", "self": "x"}))
}

fn owned(id: &str, filter: &str, ip: &str) -> TicketEvent {
    TicketEvent::from_json(&event(id, filter, ip)).unwrap()
}

fn spawn(
    cfg: &TicketConfig,
    opts: SinkOptions,
    rec: Option<&DebuggingRecorder>,
) -> (TicketHandle, Arc<History>, CancellationToken) {
    let history = Arc::new(History::in_memory(100));
    let cancel = CancellationToken::new();
    let go = || TicketSink::spawn(cfg, Arc::clone(&history), opts, cancel.clone()).unwrap();
    let (h, _task) = match rec {
        Some(r) => metrics::with_local_recorder(r, go),
        None => go(),
    };
    (h, history, cancel)
}

type Snapshot = Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>;

/// `tickets_total{ticket,outcome}` in one snapshot (taking a snapshot resets the counters).
fn metric(snap: &Snapshot, ticket: &str, outcome: &str) -> u64 {
    snap.iter()
        .find(|(k, _, _, _)| {
            let key = k.key();
            key.name() == plura_forwarder::metrics::TICKETS_TOTAL
                && key
                    .labels()
                    .any(|l| l.key() == "ticket" && l.value() == ticket)
                && key
                    .labels()
                    .any(|l| l.key() == "outcome" && l.value() == outcome)
        })
        .map_or(0, |(_, _, _, v)| match v {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
}

#[tokio::test]
async fn rate_limit_and_dedup_are_counted_exactly() {
    let mock = Mock::start(jira_ok()).await;
    let (_d, key) = secret_file("t");
    let mut cfg = ticket("jira-soc", TicketSystem::Jira, "cloud", &mock.base(), key);
    cfg.rate_per_minute = 1;
    cfg.burst = 2;
    let rec = DebuggingRecorder::new();
    let snap = rec.snapshotter();
    let opts = SinkOptions {
        queue_capacity: 3,
        ..fast()
    };
    let (h, history, cancel) = spawn(&cfg, opts, Some(&rec));

    // The burst: two distinct dedup keys are created at once.
    assert_eq!(
        h.offer_owned(owned("e1", "F1", "10.0.0.1"), &[]),
        Offered::Queued
    );
    assert_eq!(
        h.offer_owned(owned("e2", "F1", "10.0.0.2"), &[]),
        Offered::Queued
    );
    assert!(
        wait_until(T, || h.counts().created == 2).await,
        "{:?}",
        h.counts()
    );
    // Same event id, and same (filterId, serverIp) within the window: nothing added.
    assert_eq!(
        h.offer_owned(owned("e1", "F1", "10.0.0.1"), &[]),
        Offered::Deduplicated
    );
    assert_eq!(
        h.offer_owned(owned("e3", "F1", "10.0.0.1"), &[]),
        Offered::Deduplicated
    );
    // The bucket is empty (1/min): three wait in the queue, the rest are rate limited.
    let offered: Vec<Offered> = (4..=8)
        .map(|i| h.offer_owned(owned(&format!("e{i}"), "F2", &format!("10.0.1.{i}")), &[]))
        .collect();
    assert_eq!(
        offered,
        [
            Offered::Queued,
            Offered::Queued,
            Offered::Queued,
            Offered::RateLimited,
            Offered::RateLimited
        ]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let want = OutcomeCounts {
        created: 2,
        deduplicated: 2,
        rate_limited: 2,
        failed: 0,
    };
    assert_eq!(h.counts(), want);
    assert_eq!(mock.count(), 2, "no request beyond the burst");
    let snap: Snapshot = snap.snapshot().into_vec();
    for (outcome, n) in [
        ("created", 2),
        ("deduplicated", 2),
        ("rate_limited", 2),
        ("failed", 0),
    ] {
        assert_eq!(
            metric(&snap, "jira-soc", outcome),
            n,
            "tickets_total{{outcome={outcome}}}"
        );
    }
    let l = history.list(10);
    assert_eq!(l.len(), 2);
    assert!(l.iter().all(|r| r.outcome == "created"
        && r.key == "SEC-1"
        && r.ticket == "jira-soc"
        && r.origin == "auto"));
    cancel.cancel();
}

#[tokio::test]
async fn unauthorized_is_never_retried() {
    let mock = Mock::start(
        Reply::new(401, "<html>nope</html>").header("x-seraph-loginreason", "AUTHENTICATED_FAILED"),
    )
    .await;
    let (_d, key) = secret_file("bad");
    let cfg = ticket("jira-dc", TicketSystem::Jira, "server", &mock.base(), key);
    let (h, history, cancel) = spawn(&cfg, fast(), None);
    h.offer_owned(owned("e1", "F1", "10.0.0.1"), &[]);
    assert!(wait_until(T, || h.counts().failed == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mock.count(), 1, "a 401 is not retried");
    // Within the auth pause the next ticket fails without another login attempt.
    h.offer_owned(owned("e2", "F1", "10.0.0.2"), &[]);
    assert!(wait_until(T, || h.counts().failed == 2).await);
    assert_eq!(mock.count(), 1);
    let l = history.list(10);
    assert_eq!(l.len(), 2);
    assert!(l.iter().all(|r| r.outcome == "failed" && r.key.is_empty()));
    assert!(l.iter().any(|r| r.status == Some(401) && r.attempts == 1));
    // The failed key is forgotten: the same dedup key may try again (not deduplicated).
    assert_eq!(
        h.offer_owned(owned("e9", "F1", "10.0.0.1"), &[]),
        Offered::Queued
    );
    cancel.cancel();
}

#[tokio::test]
async fn rate_limited_by_the_server_waits_for_retry_after() {
    let mock = Mock::start(jira_ok()).await;
    mock.script([Reply::json(429, json!({}))
        .header("retry-after", "1")
        .header("ratelimit-reason", "jira-burst-based")]);
    let (_d, key) = secret_file("t");
    let cfg = ticket("jira-soc", TicketSystem::Jira, "cloud", &mock.base(), key);
    let (h, history, cancel) = spawn(&cfg, fast(), None);
    h.offer_owned(owned("e1", "F1", "10.0.0.1"), &[]);
    assert!(
        wait_until(T, || h.counts().created == 1).await,
        "{:?}",
        h.counts()
    );
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, before Retry-After"
    );
    assert!(gap < Duration::from_secs(5), "{gap:?}");
    assert_eq!(history.list(1)[0].attempts, 2);
    cancel.cancel();
}

#[tokio::test]
async fn server_errors_are_retried_then_created_and_bounded() {
    let mock = Mock::start(Reply::json(201, json!({"issue": {"id": 77}}))).await;
    mock.script([
        Reply::new(503, ""),
        Reply::new(500, "boom"),
        Reply::new(502, ""),
    ]);
    let (_d, key) = secret_file("k");
    let cfg = ticket("redmine", TicketSystem::Redmine, "5", &mock.base(), key);
    let (h, history, cancel) = spawn(&cfg, fast(), None);
    h.offer_owned(owned("e1", "F1", "10.0.0.1"), &[]);
    assert!(
        wait_until(T, || h.counts().created == 1).await,
        "{:?}",
        h.counts()
    );
    assert_eq!(mock.count(), 4);
    let r = &history.list(1)[0];
    assert_eq!(
        (r.key.as_str(), r.attempts, r.outcome.as_str()),
        ("#77", 4, "created")
    );
    assert!(r.url.ends_with("/issues/77"));
    cancel.cancel();

    // Attempts are bounded.
    let mock = Mock::start(Reply::new(500, "")).await;
    let (_d2, key) = secret_file("k");
    let cfg = ticket("redmine", TicketSystem::Redmine, "5", &mock.base(), key);
    let (h, history, cancel) = spawn(
        &cfg,
        SinkOptions {
            max_attempts: 3,
            ..fast()
        },
        None,
    );
    h.offer_owned(owned("e1", "F1", "10.0.0.1"), &[]);
    assert!(
        wait_until(T, || h.counts().failed == 1).await,
        "{:?}",
        h.counts()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.count(), 3);
    let r = &history.list(1)[0];
    assert_eq!((r.status, r.attempts), (Some(500), 3));
    cancel.cancel();
}

#[tokio::test]
async fn router_offers_by_when_and_serves_manual_and_test_tickets() {
    let mock = Mock::start(jira_ok()).await;
    let (_d, key) = secret_file("t");
    let mut auto = ticket(
        "auto",
        TicketSystem::Jira,
        "server",
        &mock.base(),
        key.clone(),
    );
    auto.when = Some(TicketWhen {
        select: Selection::all(),
        filter: FilterConfig {
            min_risk: Some(5),
            ..FilterConfig::default()
        },
    });
    let manual = ticket("manual", TicketSystem::Jira, "server", &mock.base(), key);
    let history = Arc::new(History::in_memory(100));
    let cancel = CancellationToken::new();
    let router = TicketRouter::start(
        &[auto, manual],
        Arc::clone(&history),
        fast(),
        cancel.clone(),
    )
    .unwrap();

    let origin = |offset| EventOrigin {
        topic: "plura.detect",
        partition: 0,
        offset,
    };
    let high = br#"{"logType":"detect","category":"web","filterId":"F1","serverIp":"10.0.0.1","filterRiskLevel":8,"logOrigin":"raw"}"#;
    let low = br#"{"logType":"detect","category":"web","filterId":"F2","serverIp":"10.0.0.1","filterRiskLevel":2}"#;
    let opts = DecodeOptions::default();
    let ev = decode(high, None, &opts).unwrap();
    assert!(router.wants(&ev));
    assert_eq!(
        router.offer(&ev, origin(5), &[("pci_dss_3_2_1", "10.6.1")]),
        1,
        "only the automatic system"
    );
    let ev = decode(low, None, &opts).unwrap();
    assert!(!router.wants(&ev));
    assert_eq!(router.offer(&ev, origin(6), &[]), 0);
    let auto_h = router.handle("auto").unwrap();
    assert!(wait_until(T, || auto_h.counts().created == 1).await);
    let r = &history.list(1)[0];
    assert_eq!(
        r.event_id, "plura.detect/0/5",
        "no eventId: topic/partition/offset"
    );
    let body = mock.requests()[0].json();
    let d = body["fields"]["description"].as_str().unwrap();
    assert!(
        d.contains("pci\\_dss\\_3\\_2\\_1") && d.contains("{noformat}\nraw\n{noformat}"),
        "{d}"
    );
    // Redelivered (same offset, at-least-once): deduplicated by event id.
    let ev = decode(high, None, &opts).unwrap();
    router.offer(&ev, origin(5), &[]);
    assert_eq!(auto_h.counts().deduplicated, 1);

    // Manual and test tickets, recorded in the history.
    let c = router
        .issue("manual", &event("m-1", "F9", "10.9.9.9"), &[])
        .await
        .unwrap();
    assert_eq!(c.key, "SEC-1");
    let c = router.test("manual").await.unwrap();
    assert_eq!(c.system, "jira");
    assert_eq!(
        router.test("nope").await.unwrap_err(),
        TicketError::UnknownTicket("nope".into())
    );
    let l = router.history().list(10);
    let origins: Vec<&str> = l.iter().map(|r| r.origin.as_str()).collect();
    assert_eq!(origins, ["test", "manual", "auto"], "newest first");
    assert_eq!(router.handle("manual").unwrap().counts().created, 2);

    // Another replica sharing the history (the Kafka topic) does not ticket the event again.
    let (_d2, key) = secret_file("t");
    let mut other = ticket("auto", TicketSystem::Jira, "server", &mock.base(), key);
    other.when = Some(TicketWhen {
        select: Selection::all(),
        filter: FilterConfig::default(),
    });
    let replica =
        TicketRouter::start(&[other], Arc::clone(&history), fast(), cancel.clone()).unwrap();
    let ev = decode(high, None, &opts).unwrap();
    assert_eq!(replica.offer(&ev, origin(5), &[]), 0);
    assert_eq!(replica.handle("auto").unwrap().counts().deduplicated, 1);

    cancel.cancel();
    tokio::time::timeout(T, router.join()).await.unwrap();
    tokio::time::timeout(T, replica.join()).await.unwrap();
}

#[tokio::test]
async fn jira_remaining_zero_pauses_until_the_reset() {
    let mock = Mock::start(jira_ok()).await;
    mock.script([Reply::json(201, json!({"id": "10001", "key": "SEC-2"}))
        .header("x-ratelimit-remaining", "0")
        .header("retry-after", "1")]);
    let (_d, key) = secret_file("t");
    let cfg = ticket("jira-soc", TicketSystem::Jira, "cloud", &mock.base(), key);
    let (h, history, cancel) = spawn(&cfg, fast(), None);
    h.offer_owned(owned("e1", "F1", "10.0.0.1"), &[]);
    h.offer_owned(owned("e2", "F1", "10.0.0.2"), &[]);
    assert!(
        wait_until(T, || h.counts().created == 2).await,
        "{:?}",
        h.counts()
    );
    let reqs = mock.requests();
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "next request after {gap:?}"
    );
    let first = &history.list(10)[1];
    assert_eq!(
        (
            first.key.as_str(),
            first.id.as_deref(),
            first.project.as_str()
        ),
        ("SEC-2", Some("10001"), "SEC")
    );
    cancel.cancel();
}
