//! Ticket linking inside the running service (`app::serve`): consumed events that match a
//! `[ticket.when]` open exactly one ticket each in a ticket system (a Redmine-speaking server on
//! 127.0.0.1), others none; the history is served at `GET /api/tickets` behind the bearer token.

mod common;
mod ticket_mock;

use std::time::Duration;

use common::*;
use plura_forwarder::source::embedded::EmbeddedKafka;
use serde_json::{json, Value};
use ticket_mock::{secret_file, Mock, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_events_open_one_ticket_each_and_the_history_is_served() {
    let mut topics: Vec<(&str, i32)> = TOPICS.iter().map(|t| (*t, PARTITIONS)).collect();
    topics.extend([("plura.forwarder.dlq", 1), ("plura.forwarder.tickets", 1)]);
    let kafka = EmbeddedKafka::start(&topics).unwrap();
    let brokers = kafka.bootstrap_servers();
    let mock = Mock::start(Reply::json(201, json!({"issue": {"id": 77}}))).await;
    let (_dir, key) = secret_file("redmine-key");
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = "t0ken-for-the-test";
    // SAFETY: set before any thread of this test reads the environment.
    std::env::set_var("PLURA_TEST_TICKETS_TOKEN", token);
    let syslog = plura_forwarder::receiver::Receiver::udp().await.unwrap();
    let toml = base_toml(&brokers, "tickets").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{admin}\"\ntoken_env = \"PLURA_TEST_TICKETS_TOKEN\""),
    ) + &format!(
        r#"
[compliance]
mapping_file = "{root}/config/compliance.toml"
mode = "all"

[[syslog]]
name = "siem"
protocol = "udp"
address = "{syslog}"

[[ticket]]
name = "redmine"
system = "redmine"
version = "5"
url = "{url}"
project = "secops"
auth_key_file = "{key}"
issue_type = "3"
rate_per_minute = 600
burst = 100
dedup_key = ["eventId"]
[ticket.when]
detect = ["web"]
defense = "none"
usage = "none"
min_risk = 7
"#,
        root = env!("CARGO_MANIFEST_DIR"),
        syslog = syslog.addr(),
        url = mock.base(),
        key = key.display()
    );
    let cfg = config(&toml);
    let events = samples(0..240);
    let want: Vec<String> = events
        .iter()
        .filter(|(_, e)| {
            e["logType"] == "detect"
                && e["category"] == "web"
                && e["filterRiskLevel"].as_i64().unwrap_or(0) >= 7
        })
        .map(|(_, e)| e["eventId"].as_str().unwrap().to_owned())
        .collect();
    assert!(!want.is_empty());
    produce(&brokers, &events).await;

    let posts = |m: &Mock| {
        m.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/issues.json"))
            .collect::<Vec<_>>()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let serve = plura_forwarder::app::serve(cfg, stop.clone());
    let check = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while posts(&mock).len() < want.len() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        syslog.wait_for(events.len(), Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let unauthorised =
            tokio::task::spawn_blocking(move || http(admin, "GET", "/api/tickets", None))
                .await
                .unwrap();
        let history = tokio::task::spawn_blocking(move || {
            http(admin, "GET", "/api/tickets?limit=1000", Some(token))
        })
        .await
        .unwrap();
        stop.cancel();
        (unauthorised, history)
    };
    let (result, (unauthorised, history)) = tokio::join!(serve, check);
    result.expect("service");
    assert_nothing_deleted(&brokers);

    let posted = posts(&mock);
    assert_eq!(
        posted.len(),
        want.len(),
        "one ticket per matching event, none for the others"
    );
    for p in &posted {
        assert_eq!(p.header("x-redmine-api-key"), Some("redmine-key"));
        let body = p.json();
        assert_eq!(body["issue"]["project_id"], "secops");
        assert!(
            body["issue"]["description"]
                .as_str()
                .unwrap()
                .contains("pci_dss_3_2_1"),
            "compliance controls listed"
        );
    }
    assert_eq!(unauthorised.0, 401);
    assert_eq!(history.0, 200, "{}", history.1);
    let h: Value = serde_json::from_str(&history.1).unwrap();
    let mut ids: Vec<String> = h["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    let mut want = want;
    want.sort();
    assert_eq!(
        ids, want,
        "the history has one record per ticket: {}",
        history.1
    );
    assert_eq!(
        syslog.count(),
        events.len(),
        "ticketing does not take events away from syslog"
    );
}
