//! Against a real Redmine (4.x / 5.x), when one is reachable; otherwise each test prints why
//! it skipped and passes. Enable with:
//!
//! ```text
//! PLURA_TEST_REDMINE_URL=http://127.0.0.1:3000   # base URL
//! PLURA_TEST_REDMINE_KEY=<api key of an admin>   # My account › API access key
//! PLURA_TEST_REDMINE_PROJECT=secops              # optional; an existing project identifier
//! ```
//!
//! The REST API must be enabled (Administration › Settings › API). `tests/ticket_redmine_setup.sh`
//! installs and starts one (Debian redmine + redmine-sqlite + thin) and prints these variables.

mod ticket_mock;

use std::time::Duration;

use plura_forwarder::config::{SecretSource, TicketSystem};
use plura_forwarder::ticket::{self, TicketError};
use serde_json::{json, Value};
use ticket_mock::{event, secret_file, ticket};

struct Real {
    url: String,
    key: String,
    project: String,
}

fn real() -> Option<Real> {
    let (Ok(url), Ok(key)) = (
        std::env::var("PLURA_TEST_REDMINE_URL"),
        std::env::var("PLURA_TEST_REDMINE_KEY"),
    ) else {
        println!("skipped: PLURA_TEST_REDMINE_URL / PLURA_TEST_REDMINE_KEY not set");
        return None;
    };
    let project = std::env::var("PLURA_TEST_REDMINE_PROJECT").unwrap_or_else(|_| "secops".into());
    let url = url.trim_end_matches('/').to_owned();
    Some(Real { url, key, project })
}

async fn get(r: &Real, path: &str) -> Result<(u16, Value), String> {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", r.url))
        .header("X-Redmine-API-Key", &r.key)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// `None` (after printing why) when the server cannot be used.
async fn reachable(r: &Real) -> Option<()> {
    match get(r, "/users/current.json").await {
        Ok((200, _)) => Some(()),
        Ok((status, _)) => {
            println!(
                "skipped: {}/users/current.json answered {status} (key or REST API setting)",
                r.url
            );
            None
        }
        Err(e) => {
            println!("skipped: no Redmine reachable at {}: {e}", r.url);
            None
        }
    }
}

#[tokio::test]
async fn creates_a_real_issue_with_the_raw_log() {
    let Some(r) = real() else { return };
    if reachable(&r).await.is_none() {
        return;
    }
    let (_d, key) = secret_file(&r.key);
    let mut cfg = ticket("redmine", TicketSystem::Redmine, "5", &r.url, key);
    cfg.project = r.project.clone();
    cfg.issue_type = "Support".into();
    let mut ev = event("real-1", "F-1", "10.0.0.1");
    ev["logOrigin"] = json!("GET /x </pre> <b>y</b>\nline 2");
    let c = ticket::issue(&cfg, &ev, &[("pci_dss_3_2_1", "10.6.1")])
        .await
        .expect("created");
    let id = c.id.clone().expect("id");
    assert_eq!(c.url, format!("{}/issues/{id}", r.url));
    let (status, issue) = get(&r, &format!("/issues/{id}.json")).await.unwrap();
    assert_eq!(status, 200);
    let issue = &issue["issue"];
    assert_eq!(
        issue["subject"],
        "[HIGH] 컬럼 데이터 탈취 from 172.16.20.192 on Harry-LP-L"
    );
    assert_eq!(issue["priority"]["id"], 3);
    assert_eq!(
        issue["tracker"]["name"], "Support",
        "tracker name resolved to its id"
    );
    // Redmine stores line ends as CRLF.
    let d = issue["description"].as_str().unwrap().replace("\r\n", "\n");
    assert!(
        d.contains("<pre>\nGET /x &lt;/pre> <b>y</b>\nline 2\n</pre>"),
        "{d}"
    );
    assert!(d.contains("pci_dss_3_2_1"), "{d}");

    let t = ticket::test_ticket(&cfg).await.expect("test ticket");
    assert_eq!(t.system, "redmine");
}

#[tokio::test]
async fn real_errors_unknown_project_and_bad_key() {
    let Some(r) = real() else { return };
    if reachable(&r).await.is_none() {
        return;
    }
    let (_d, key) = secret_file(&r.key);
    let mut cfg = ticket("redmine", TicketSystem::Redmine, "5", &r.url, key);
    cfg.project = "no-such-project-plura".into();
    let e = ticket::issue(&cfg, &event("real-2", "F", "1.1.1.1"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, TicketError::Rejected { status: 422, message, .. } if message.contains("Project")),
        "{e:?}"
    );
    let (_d2, bad) = secret_file("0000000000000000000000000000000000000000");
    cfg.auth = SecretSource::File(bad);
    cfg.project = r.project.clone();
    let e = ticket::issue(&cfg, &event("real-3", "F", "1.1.1.1"), &[])
        .await
        .unwrap_err();
    assert!(matches!(e, TicketError::Auth { status: 401, .. }), "{e:?}");
}
