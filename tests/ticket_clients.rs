//! Contract tests of the ticket clients against loopback mocks that check method, path,
//! headers and body as ticketing.md describes them, and answer with the documented success
//! and error bodies.

mod ticket_mock;

use std::time::Duration;

use plura_forwarder::config::TicketSystem;
use plura_forwarder::ticket::{self, TicketError};
use serde_json::json;
use ticket_mock::{event, secret_file, ticket, Mock, Reply};

const T: Duration = Duration::from_secs(20);

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f).await.expect("bounded in time")
}

#[tokio::test]
async fn jira_cloud_v3_adf_basic_auth() {
    let mock = Mock::start(Reply::json(
        201,
        json!({"id": "10000", "key": "SEC-24", "self": "x/rest/api/3/issue/10000"}),
    ))
    .await;
    let (_d, key) = secret_file("cloud-token");
    let cfg = ticket("jira-soc", TicketSystem::Jira, "cloud", &mock.base(), key);
    let created = within(ticket::issue(
        &cfg,
        &event("e-1", "F-1", "10.0.0.1"),
        &[("pci_dss_3_2_1", "10.6.1"), ("isms_p", "2.11.3")],
    ))
    .await
    .unwrap();
    assert_eq!(created.key, "SEC-24");
    assert_eq!(created.url, format!("{}/browse/SEC-24", mock.base()));
    assert_eq!(created.system, "jira");
    assert_eq!(created.id.as_deref(), Some("10000"));

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/rest/api/3/issue")
    );
    // base64("soc@example.com:cloud-token")
    assert_eq!(
        r.header("authorization"),
        Some("Basic c29jQGV4YW1wbGUuY29tOmNsb3VkLXRva2Vu")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("accept"), Some("application/json"));
    let f = &r.json()["fields"];
    assert_eq!(f["project"], json!({"key": "SEC"}));
    assert_eq!(f["issuetype"], json!({"name": "Task"}));
    assert_eq!(
        f["summary"],
        "[HIGH] 컬럼 데이터 탈취 from 172.16.20.192 on Harry-LP-L"
    );
    assert_eq!(f["priority"], json!({"name": "High"}));
    let labels: Vec<&str> = f["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(labels[..3], ["plura", "plura-detect", "plura-web"]);
    assert!(labels.iter().all(|l| !l.contains(' ')));
    let d = &f["description"];
    assert_eq!(
        (d["type"].as_str(), d["version"].as_i64()),
        (Some("doc"), Some(1))
    );
    let text = d.to_string();
    assert!(text.contains(r#""type":"table""#), "{text}");
    assert!(text.contains("pci_dss_3_2_1"), "{text}");
    let code = d["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "codeBlock")
        .expect("raw log code block");
    assert_eq!(
        code["content"][0]["text"],
        "GET /wordpress/?id=1%20AND%201=1 HTTP/1.1"
    );
    assert!(!text.contains(r#""text":"""#), "no empty ADF text node");
}

#[tokio::test]
async fn jira_server_v2_wiki_bearer_and_priority_fallback() {
    let mock = Mock::start(Reply::json(
        201,
        json!({"id": "39000", "key": "TEST-101", "self": "x"}),
    ))
    .await;
    mock.script([Reply::json(
        400,
        json!({"errorMessages": [], "errors": {"priority": "Field 'priority' cannot be set. It is not on the appropriate screen, or unknown."}}),
    )]);
    let (_d, key) = secret_file("dc-pat");
    let mut cfg = ticket(
        "jira-dc",
        TicketSystem::Jira,
        "server",
        &format!("{}/jira", mock.base()),
        key,
    );
    cfg.issue_type = "10002".into();
    let created = within(ticket::issue(&cfg, &event("e-2", "F-1", "10.0.0.1"), &[]))
        .await
        .unwrap();
    assert_eq!(created.key, "TEST-101");
    assert_eq!(created.url, format!("{}/jira/browse/TEST-101", mock.base()));

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2, "one retry without the priority");
    for r in &reqs {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/jira/rest/api/2/issue")
        );
        assert_eq!(r.header("authorization"), Some("Bearer dc-pat"));
    }
    let (first, second) = (reqs[0].json(), reqs[1].json());
    assert_eq!(first["fields"]["priority"], json!({"name": "High"}));
    assert!(second["fields"].get("priority").is_none());
    assert_eq!(second["fields"]["issuetype"], json!({"id": "10002"}));
    let d = second["fields"]["description"]
        .as_str()
        .expect("v2 description is a string");
    assert!(d.contains("||Field||Value||"), "{d}");
    assert!(
        d.contains("{noformat}\nGET /wordpress/?id=1%20AND%201=1 HTTP/1.1\n{noformat}"),
        "{d}"
    );
}

#[tokio::test]
async fn jira_errors_are_classified() {
    let mock = Mock::start(
        Reply::new(401, "<html>login</html>")
            .header("x-seraph-loginreason", "AUTHENTICATED_FAILED"),
    )
    .await;
    let (_d, key) = secret_file("bad");
    let cfg = ticket("jira-dc", TicketSystem::Jira, "server", &mock.base(), key);
    let e = within(ticket::issue(&cfg, &event("e-3", "F", "1.1.1.1"), &[]))
        .await
        .unwrap_err();
    assert!(matches!(e, TicketError::Auth { status: 401, .. }), "{e:?}");
    assert!(!e.is_retryable());

    mock.set_default(Reply::json(
        400,
        json!({"errorMessages": ["The value 'FACILITIES' does not exist for the field 'project'."], "errors": {}}),
    ));
    let e = within(ticket::issue(&cfg, &event("e-4", "F", "1.1.1.1"), &[]))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        TicketError::Rejected {
            system: "jira",
            status: 400,
            message: "The value 'FACILITIES' does not exist for the field 'project'.".into()
        }
    );
    mock.set_default(Reply::json(429, json!({})).header("retry-after", "7"));
    let e = within(ticket::issue(&cfg, &event("e-5", "F", "1.1.1.1"), &[]))
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert!(e.is_retryable());
    mock.set_default(Reply::new(503, "").header("retry-after", "2"));
    let e = within(ticket::issue(&cfg, &event("e-6", "F", "1.1.1.1"), &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(e, TicketError::Server { status: 503, retry_after: Some(d), .. } if d == Duration::from_secs(2)),
        "{e:?}"
    );
}

#[tokio::test]
async fn mantis_bare_token_short_summary_category() {
    let mock = Mock::start(
        Reply::json(
            201,
            json!({"issue": {"id": 42, "summary": "x", "project": {"id": 1}}}),
        )
        .reason("Issue Created with id 42"),
    )
    .await;
    let (_d, key) = secret_file("mantis-token");
    let cfg = ticket("mantis", TicketSystem::MantisBt, "2", &mock.base(), key);
    let mut ev = event("e-7", "F-1", "10.0.0.1");
    ev["filterName"] = json!("가".repeat(300));
    let created = within(ticket::issue(&cfg, &ev, &[])).await.unwrap();
    assert_eq!(created.key, "#42");
    assert_eq!(created.url, format!("{}/view.php?id=42", mock.base()));
    assert_eq!(created.system, "mantisbt");

    let r = &mock.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/api/rest/issues")
    );
    assert_eq!(
        r.header("authorization"),
        Some("mantis-token"),
        "bare token, no Bearer"
    );
    let b = r.json();
    assert!(
        b.get("fields").is_none() && b.get("issue").is_none(),
        "no wrapper object"
    );
    assert_eq!(b["summary"].as_str().unwrap().chars().count(), 128);
    assert_eq!(b["category"], json!({"name": "General"}));
    assert_eq!(b["project"], json!({"id": 1}));
    assert_eq!(b["priority"], json!({"name": "high"}));
    let d = b["description"].as_str().unwrap();
    assert!(!d.trim().is_empty());
    assert!(
        d.contains("GET /wordpress/?id=1%20AND%201=1 HTTP/1.1"),
        "{d}"
    );
    assert!(b["additional_information"]
        .as_str()
        .unwrap()
        .contains("fwd-"));
}

#[tokio::test]
async fn mantis_errors_and_index_php_fallback() {
    let mock = Mock::start(Reply::new(404, "")).await;
    mock.route(|r| {
        (r.path == "/api/rest/index.php/issues")
            .then(|| Reply::json(201, json!({"issue": {"id": 7}})))
    });
    let (_d, key) = secret_file("t");
    let cfg = ticket("mantis", TicketSystem::MantisBt, "2", &mock.base(), key);
    let created = within(ticket::issue(&cfg, &event("e-8", "F", "1.1.1.1"), &[]))
        .await
        .unwrap();
    assert_eq!(created.key, "#7");
    let paths: Vec<String> = mock.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/api/rest/issues", "/api/rest/index.php/issues"]);

    // A MantisBT error 404 (unknown category) is not a rewrite problem: no fallback.
    let mock = Mock::start(Reply::json(
        404,
        json!({"message": "Category 'Task' not found", "code": 1502, "localized": "Category not found."}),
    ))
    .await;
    let (_d2, key) = secret_file("t");
    let cfg = ticket("mantis", TicketSystem::MantisBt, "2", &mock.base(), key);
    let e = within(ticket::issue(&cfg, &event("e-9", "F", "1.1.1.1"), &[]))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        TicketError::Rejected {
            system: "mantisbt",
            status: 404,
            message: "Category 'Task' not found (code 1502)".into()
        }
    );
    assert_eq!(mock.count(), 1);

    // 401 with the error only in the reason phrase; anti-spam 429 without Retry-After.
    mock.set_default(Reply::new(401, "").reason("Valid API token required"));
    let e = within(ticket::issue(&cfg, &event("e-10", "F", "1.1.1.1"), &[]))
        .await
        .unwrap_err();
    assert!(matches!(e, TicketError::Auth { status: 401, .. }), "{e:?}");
    assert!(e.to_string().contains("Valid API token required"), "{e}");
    mock.set_default(Reply::json(
        429,
        json!({"message": "Hit rate limit threshold", "code": 27}),
    ));
    let e = within(ticket::issue(&cfg, &event("e-11", "F", "1.1.1.1"), &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            TicketError::RateLimited {
                retry_after: None,
                ..
            }
        ),
        "{e:?}"
    );
    // 202 accepted for moderation: no id.
    mock.set_default(Reply::new(202, "").reason("Accepted for moderation"));
    let c = within(ticket::issue(&cfg, &event("e-12", "F", "1.1.1.1"), &[]))
        .await
        .unwrap();
    assert_eq!((c.key.as_str(), c.id), ("(moderated)", None));
}

#[tokio::test]
async fn redmine_api_key_textile_location() {
    let mock = Mock::start(Reply::json(
        201,
        json!({"issue": {"id": 5, "project": {"id": 1, "name": "Secops"}, "subject": "x"}}),
    ))
    .await;
    let base = mock.base();
    let loc = format!("{base}/issues/5");
    mock.set_default(
        Reply::json(
            201,
            json!({"issue": {"id": 5, "project": {"id": 1, "name": "Secops"}}}),
        )
        .header("location", loc.clone()),
    );
    let (_d, key) = secret_file("redmine-key");
    let cfg = ticket("redmine", TicketSystem::Redmine, "5", &base, key);
    let created = within(ticket::issue(
        &cfg,
        &event("e-13", "F-1", "10.0.0.1"),
        &[("efsr", "제13조")],
    ))
    .await
    .unwrap();
    assert_eq!(
        (created.key.as_str(), created.url.as_str()),
        ("#5", loc.as_str())
    );

    let r = &mock.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/issues.json")
    );
    assert_eq!(r.header("x-redmine-api-key"), Some("redmine-key"));
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "Redmine ignores a body without it"
    );
    assert!(r.header("authorization").is_none());
    let i = &r.json()["issue"];
    assert_eq!(i["project_id"], "secops");
    assert_eq!(i["tracker_id"], 3);
    assert_eq!(i["priority_id"], 3);
    assert_eq!(
        i["subject"],
        "[HIGH] 컬럼 데이터 탈취 from 172.16.20.192 on Harry-LP-L"
    );
    let d = i["description"].as_str().unwrap();
    assert!(d.contains("|_. Field |_. Value |"), "{d}");
    assert!(d.contains("* *efsr*: 제13조"), "{d}");
    assert!(
        d.contains("<pre>\nGET /wordpress/?id=1%20AND%201=1 HTTP/1.1\n</pre>"),
        "{d}"
    );
}

#[tokio::test]
async fn redmine_unknown_project_is_422_and_priority_fallback() {
    let mock = Mock::start(Reply::json(
        422,
        json!({"errors": ["Project cannot be blank", "Tracker cannot be blank", "Status cannot be blank"]}),
    ))
    .await;
    let (_d, key) = secret_file("k");
    let cfg = ticket("redmine", TicketSystem::Redmine, "4", &mock.base(), key);
    let e = within(ticket::issue(&cfg, &event("e-14", "F", "1.1.1.1"), &[]))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        TicketError::Rejected {
            system: "redmine",
            status: 422,
            message: "Project cannot be blank; Tracker cannot be blank; Status cannot be blank"
                .into()
        }
    );
    assert_eq!(mock.count(), 1);

    let mock = Mock::start(Reply::json(201, json!({"issue": {"id": 9}}))).await;
    mock.script([Reply::json(
        422,
        json!({"errors": ["Priority cannot be blank"]}),
    )]);
    let (_d2, key) = secret_file("k");
    let cfg = ticket("redmine", TicketSystem::Redmine, "4", &mock.base(), key);
    let c = within(ticket::issue(&cfg, &event("e-15", "F", "1.1.1.1"), &[]))
        .await
        .unwrap();
    assert_eq!(c.url, format!("{}/issues/9", mock.base()));
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].json()["issue"].get("priority_id").is_none());

    // 401 with an empty body (bad key), 403 when the REST API is disabled.
    for status in [401, 403] {
        mock.set_default(
            Reply::new(status, "").header("www-authenticate", "Basic realm=\"Redmine API\""),
        );
        let e = within(ticket::issue(&cfg, &event("e-16", "F", "1.1.1.1"), &[]))
            .await
            .unwrap_err();
        assert!(
            matches!(e, TicketError::Auth { status: s, .. } if s == status),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn test_ticket_per_system() {
    for (system, version, ok) in [
        (
            TicketSystem::Jira,
            "cloud",
            Reply::json(201, json!({"id": "1", "key": "SEC-1"})),
        ),
        (
            TicketSystem::Jira,
            "server",
            Reply::json(201, json!({"id": "1", "key": "SEC-1"})),
        ),
        (
            TicketSystem::MantisBt,
            "2",
            Reply::json(201, json!({"issue": {"id": 1}})),
        ),
        (
            TicketSystem::Redmine,
            "5",
            Reply::json(201, json!({"issue": {"id": 1}})),
        ),
    ] {
        let mock = Mock::start(ok).await;
        let (_d, key) = secret_file("k");
        let cfg = ticket("t", system, version, &mock.base(), key);
        let c = within(ticket::test_ticket(&cfg)).await.unwrap();
        assert_eq!(c.system, system.name());
        let b = mock.requests()[0].json();
        let summary = b
            .pointer("/fields/summary")
            .or_else(|| b.pointer("/summary"))
            .or_else(|| b.pointer("/issue/subject"))
            .and_then(|s| s.as_str())
            .unwrap();
        assert!(
            summary.starts_with("[TEST] plura-forwarder connectivity test "),
            "{summary}"
        );
        let text = b.to_string();
        assert!(text.contains("티켓 발행 테스트"), "{text}");
        if system == TicketSystem::Jira {
            assert!(b["fields"]["labels"]
                .as_array()
                .unwrap()
                .contains(&json!("test")));
        }
    }
}

#[tokio::test]
async fn unreachable_is_a_transport_error_and_a_missing_key_names_the_source() {
    let (_d, key) = secret_file("k");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = ticket(
        "jira",
        TicketSystem::Jira,
        "server",
        &format!("http://127.0.0.1:{port}"),
        key,
    );
    let e = within(ticket::issue(&cfg, &event("e", "F", "1.1.1.1"), &[]))
        .await
        .unwrap_err();
    assert!(matches!(e, TicketError::Transport { .. }), "{e:?}");
    assert!(e.is_retryable());

    let mut cfg = cfg;
    cfg.auth =
        plura_forwarder::config::SecretSource::Env("PLURA_TEST_TICKET_KEY_THAT_IS_NOT_SET".into());
    let e = within(ticket::test_ticket(&cfg)).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("PLURA_TEST_TICKET_KEY_THAT_IS_NOT_SET"),
        "{e}"
    );
    let e = within(ticket::issue(&cfg, &json!("not an object"), &[]))
        .await
        .unwrap_err();
    assert_eq!(e, TicketError::NotAnObject);
}

#[tokio::test]
async fn redmine_tracker_by_name_is_looked_up_once() {
    let mock = Mock::start(Reply::json(201, json!({"issue": {"id": 1}}))).await;
    mock.route(|r| {
        (r.method == "GET" && r.path == "/trackers.json").then(|| {
            Reply::json(
                200,
                json!({"trackers": [{"id": 1, "name": "Bug"}, {"id": 3, "name": "Support"}]}),
            )
        })
    });
    let (_d, key) = secret_file("k");
    let mut cfg = ticket("redmine", TicketSystem::Redmine, "5", &mock.base(), key);
    cfg.issue_type = "support".into();
    let t = ticket::Target::new(&cfg).unwrap();
    for i in 0..2 {
        let ev = ticket::TicketEvent::from_json(&event(&format!("e{i}"), "F", "1.1.1.1")).unwrap();
        within(t.create(&ticket::TicketContent::for_event(ev, false, &[])))
            .await
            .unwrap();
    }
    let reqs = mock.requests();
    let seen: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/trackers.json"),
            ("POST", "/issues.json"),
            ("POST", "/issues.json")
        ]
    );
    assert_eq!(reqs[0].header("x-redmine-api-key"), Some("k"));
    assert_eq!(reqs[1].json()["issue"]["tracker_id"], 3);
    assert!(
        !reqs[1].json()["issue"]["description"]
            .as_str()
            .unwrap()
            .contains("Raw log"),
        "include_raw_log = false"
    );
}

#[tokio::test]
async fn too_long_is_retried_once_with_a_short_raw_log() {
    let mock = Mock::start(Reply::json(201, json!({"id": "1", "key": "SEC-9"}))).await;
    mock.script([Reply::json(
        400,
        json!({"errorMessages": [], "errors": {"description": "The entered text is too long. It exceeds the allowed limit of 32,767 characters."}}),
    )]);
    let (_d, key) = secret_file("k");
    let cfg = ticket("jira-dc", TicketSystem::Jira, "server", &mock.base(), key);
    let mut ev = event("e-long", "F", "1.1.1.1");
    ev["logOrigin"] = json!("x".repeat(20_000));
    let c = within(ticket::issue(&cfg, &ev, &[])).await.unwrap();
    assert_eq!(c.key, "SEC-9");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    let (a, b) = (reqs[0].json(), reqs[1].json());
    let len = |j: &serde_json::Value| j["fields"]["description"].as_str().unwrap().len();
    assert!(
        len(&a) > 20_000 && len(&b) < 6_000,
        "{} then {}",
        len(&a),
        len(&b)
    );
    assert!(b["fields"]["description"]
        .as_str()
        .unwrap()
        .contains("(truncated, 16000 bytes omitted)"));
}
