//! The admin HTTP API of interfaces.md on loopback: token handling, each endpoint's body with
//! fake providers, `send-test` through real sinks, `/api/compliance` after lookups, and a
//! `/metrics` scrape parsed as Prometheus text. Every wait is bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use plura_forwarder::admin::{
    self, AdminState, Api, BoxFuture, CallError, DestinationStatus, TicketApi, Token,
};
use plura_forwarder::compliance::Compliance;
use plura_forwarder::config::{self, ComplianceMode};
use plura_forwarder::event::{decode, DecodeOptions};
use plura_forwarder::receiver::Receiver;
use plura_forwarder::sink::{SinkState, SinkStatus};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "t0k3n-for-tests";
const LIMIT: Duration = Duration::from_secs(10);

/// The process-wide Prometheus recorder (installed once per test binary).
fn recorder() -> PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| plura_forwarder::metrics::install().expect("recorder"))
        .clone()
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(api: Api) -> Server {
    start_with(api, None).await
}

/// [`start`], with a hook run before each `/metrics` render.
async fn start_with(api: Api, before_render: Option<admin::BeforeRender>) -> Server {
    let listener = admin::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let state = AdminState {
        before_render,
        extra_metrics: None,
        metrics: recorder(),
        ready: Arc::new(|| Ok(())),
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(admin::serve_api(listener, state, api, stop.clone()));
    Server { addr, stop, task }
}

fn with_token(api: Api) -> Api {
    Api {
        token: Token::new(TOKEN),
        ..api
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, headers lower-cased, body).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, BTreeMap<String, String>, String) {
    let io = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        if let Some(a) = auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        let body = body.unwrap_or("");
        req.push_str(&format!(
            "Content-Length: {}\r\nContent-Type: application/json\r\n\r\n{body}",
            body.len()
        ));
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).expect("UTF-8 response")
    };
    let resp = tokio::time::timeout(LIMIT, io)
        .await
        .expect("response in time");
    let (head, body) = resp.split_once("\r\n\r\n").expect("head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

async fn api_json(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let (status, headers, body) = call(addr, method, path, Some(&auth), body).await;
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/json"),
        "{method} {path}"
    );
    (status, serde_json::from_str(&body).expect("JSON body"))
}

fn error_of(v: &Value) -> &str {
    assert_eq!(
        v.as_object().map(|o| o.contains_key("error")),
        Some(true),
        "{v}"
    );
    v["error"].as_str().expect("error is a string")
}

#[tokio::test]
async fn api_is_off_without_a_token() {
    let srv = start(Api::default()).await;
    for (m, p) in [
        ("GET", "/api/destinations"),
        ("POST", "/api/reload"),
        ("GET", "/api"),
    ] {
        let (status, _, body) = call(srv.addr, m, p, Some(&format!("Bearer {TOKEN}")), None).await;
        assert_eq!(status, 404, "{m} {p}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(error_of(&v).contains("PLURA_FORWARDER_ADMIN_TOKEN"), "{v}");
    }
    // The unauthenticated endpoints stay on.
    assert_eq!(call(srv.addr, "GET", "/healthz", None, None).await.0, 200);
    srv.stop.cancel();
}

#[tokio::test]
async fn missing_or_wrong_token_is_401_and_the_right_one_passes() {
    let srv = start(with_token(Api::default())).await;
    let cases = [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some("Bearer ".to_owned()),
    ];
    for auth in &cases {
        let (status, headers, body) =
            call(srv.addr, "GET", "/api/destinations", auth.as_deref(), None).await;
        assert_eq!(status, 401, "{auth:?}");
        assert!(headers["www-authenticate"].starts_with("Bearer"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(error_of(&v).contains("bearer token"), "{v}");
    }
    for auth in [format!("Bearer {TOKEN}"), format!("bearer  {TOKEN} ")] {
        let (status, _, body) = call(srv.addr, "GET", "/api/destinations", Some(&auth), None).await;
        assert_eq!(status, 200, "{auth:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"destinations": []})
        );
    }
    // Unknown paths and wrong methods answer JSON too (after auth).
    let (status, v) = api_json(srv.addr, "GET", "/api/nope", None).await;
    assert_eq!((status, error_of(&v)), (404, "not found"));
    let (status, headers, body) = call(
        srv.addr,
        "POST",
        "/api/destinations",
        Some(&format!("Bearer {TOKEN}")),
        None,
    )
    .await;
    assert_eq!((status, headers["allow"].as_str()), (405, "GET"));
    assert_eq!(body, r#"{"error":"method not allowed"}"#);
    srv.stop.cancel();
}

fn status(state: SinkState, queued: usize, last_error: Option<&str>) -> SinkStatus {
    SinkStatus {
        queued,
        state,
        last_error: last_error.map(Into::into),
        accepted: 10,
        written: 9,
        written_bytes: 900,
        acked: 8,
        resent: 1,
        in_flight: 1,
        batches: 3,
        send_calls: 3,
        reconnects: 2,
    }
}

#[tokio::test]
async fn destinations_show_state_queue_and_last_error() {
    let api = Api {
        destinations: Some(Arc::new(|| {
            vec![
                DestinationStatus {
                    name: "soc-siem".into(),
                    status: status(SinkState::Connected, 0, None),
                    parked: false,
                },
                DestinationStatus {
                    name: "soc-b".into(),
                    status: status(
                        SinkState::Reconnecting,
                        42,
                        Some("connecting to 10.0.0.5:514: refused"),
                    ),
                    parked: false,
                },
                DestinationStatus {
                    name: "soc-c".into(),
                    status: status(SinkState::Reconnecting, 65536, Some("timed out")),
                    parked: true,
                },
            ]
        })),
        ..with_token(Api::default())
    };
    let srv = start(api).await;
    let (code, v) = api_json(srv.addr, "GET", "/api/destinations", None).await;
    assert_eq!(code, 200);
    let d = v["destinations"].as_array().unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(
        d[0],
        json!({"name": "soc-siem", "state": "connected", "connection": "connected",
               "queue_depth": 0, "last_error": null, "in_flight": 1, "accepted": 10, "acked": 8,
               "resent": 1, "reconnects": 2, "bytes_written": 900})
    );
    assert_eq!(d[1]["state"], "reconnecting");
    assert_eq!(d[1]["queue_depth"], 42);
    assert_eq!(d[1]["last_error"], "connecting to 10.0.0.5:514: refused");
    assert_eq!(d[2]["state"], "parked");
    assert_eq!(d[2]["connection"], "reconnecting");
    srv.stop.cancel();
}

#[tokio::test]
async fn syslog_test_sends_through_a_real_connection() {
    let udp = Receiver::udp().await.unwrap();
    // A port nobody listens on: TCP connects are refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = config::from_toml_str(&format!(
        "[[syslog]]\nname = \"soc-udp\"\nprotocol = \"udp\"\nformat = \"cef\"\naddress = \"{}\"\n\
         [[syslog]]\nname = \"soc-down\"\nprotocol = \"tcp\"\naddress = \"{closed}\"\n",
        udp.addr()
    ))
    .expect("config");
    let cfg = Arc::new(cfg);
    let api = Api {
        syslog_test: Some(admin::syslog_tester(move |n| cfg.destination(n).cloned())),
        ..with_token(Api::default())
    };
    let srv = start(api).await;

    let (code, v) = api_json(srv.addr, "POST", "/api/syslog/soc-udp/test", None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["destination"], "soc-udp");
    assert_eq!(v["result"], "sent");
    assert_eq!(udp.wait_for(1, LIMIT).await, 1);
    let frame = String::from_utf8(udp.frames()[0].to_vec()).unwrap();
    assert!(
        frame.contains("CEF:0|QubitSecurity|Plura|5|(테스트)웹|plura-forwarder send-test|"),
        "{frame}"
    );
    assert_eq!(v["bytes"], frame.len());

    let (code, v) = api_json(srv.addr, "POST", "/api/syslog/soc-down/test", None).await;
    assert_eq!(code, 502, "{v}");
    let e = error_of(&v);
    assert!(e.starts_with("soc-down: connecting to 127.0.0.1:"), "{e}");

    let (code, v) = api_json(srv.addr, "POST", "/api/syslog/nope/test", None).await;
    assert_eq!(
        (code, error_of(&v)),
        (404, "no syslog destination \"nope\"")
    );
    let (code, _) = api_json(srv.addr, "GET", "/api/syslog/soc-udp/test", None).await;
    assert_eq!(code, 405);
    srv.stop.cancel();
}

#[tokio::test]
async fn compliance_counts_after_lookups() {
    let src = format!(
        "{}\n[[filter]]\nfilter_id = \"F-1021\"\n",
        include_str!("../config/compliance.toml")
    );
    let c = Arc::new(Compliance::from_toml_str(&src, ComplianceMode::Registered).unwrap());
    let srv = start(with_token(Api::default())).await;
    let (code, v) = api_json(srv.addr, "GET", "/api/compliance", None).await;
    assert_eq!(
        (code, error_of(&v)),
        (404, "no compliance mapping is loaded")
    );
    srv.stop.cancel();

    let ev = r#"{"logType":"detect","category":"web","filterId":"F-1021"}"#;
    for _ in 0..2 {
        let ev = decode(ev.as_bytes(), None, &DecodeOptions::default()).unwrap();
        assert!(c.lookup(&ev).is_some());
    }
    let report = Arc::clone(&c);
    let api = Api {
        compliance: Some(Arc::new(move || Some(report.report()))),
        ..with_token(Api::default())
    };
    let srv = start(api).await;
    let (code, v) = api_json(srv.addr, "GET", "/api/compliance", None).await;
    assert_eq!(code, 200);
    assert_eq!(v["mode"], "registered");
    assert_eq!(v["mapped_events"], 2);
    let ctl = &v["standards"]["pci_dss_3_2_1"]["controls"]["6.6"];
    assert_eq!(ctl["hits"], 2);
    assert!(ctl["title"].as_str().unwrap().contains("WAF"));
    assert!(ctl["last_seen"].is_string());
    assert_eq!(
        ctl["top_filters"],
        json!([{"filter_id": "F-1021", "hits": 2}])
    );
    assert_eq!(v["standards"]["isms_p"]["controls"]["2.10.3"]["hits"], 2);
    assert_eq!(v["standards"]["efsr"]["controls"]["제13조"]["hits"], 0);
    srv.stop.cancel();
}

#[tokio::test]
async fn reload_answers_200_or_400_with_the_errors() {
    let fail = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&fail);
    let api = Api {
        reload: Some(Arc::new(move || {
            let bad = f.fetch_add(1, Ordering::SeqCst) == 1;
            Box::pin(async move {
                if bad {
                    Err(vec![
                        "syslog[2] \"soc-b\": address \"10.0.0.5\": missing port".to_owned(),
                        "compliance mapping m.toml: filter[1] \"F-1\": pci_dss_3_2_1: unknown control id \"9.9\"".to_owned(),
                    ])
                } else {
                    Ok(json!({"reloaded": true, "destinations": 2}))
                }
            })
        })),
        ..with_token(Api::default())
    };
    let srv = start(api).await;
    let (code, v) = api_json(srv.addr, "POST", "/api/reload", None).await;
    assert_eq!(
        (code, v),
        (200, json!({"reloaded": true, "destinations": 2}))
    );
    let (code, v) = api_json(srv.addr, "POST", "/api/reload", None).await;
    assert_eq!(code, 400);
    assert!(error_of(&v).contains("missing port"), "{v}");
    assert_eq!(v["errors"].as_array().unwrap().len(), 2);
    assert_eq!(api_json(srv.addr, "GET", "/api/reload", None).await.0, 405);
    srv.stop.cancel();
}

/// Records calls; ticket "broken" fails like a ticket system that answers 500.
#[derive(Default)]
struct FakeTickets {
    issued: Mutex<Vec<(String, Value)>>,
}

impl TicketApi for FakeTickets {
    fn issue(&self, ticket: String, event: Value) -> BoxFuture<'_, Result<Value, CallError>> {
        Box::pin(async move {
            if ticket != "jira-soc" {
                return Err(CallError::NotFound(format!("no ticket system {ticket:?}")));
            }
            self.issued.lock().unwrap().push((ticket, event));
            Ok(
                json!({"key": "SEC-1", "url": "https://example.atlassian.net/browse/SEC-1", "system": "jira"}),
            )
        })
    }
    fn test(&self, ticket: String) -> BoxFuture<'_, Result<Value, CallError>> {
        Box::pin(async move {
            match ticket.as_str() {
                "broken" => Err(CallError::Upstream("jira answered 500".into())),
                _ => Ok(json!({"key": "SEC-2", "url": "u", "system": "jira"})),
            }
        })
    }
    fn history(&self, limit: usize) -> BoxFuture<'_, Result<Value, CallError>> {
        Box::pin(async move { Ok(json!({"tickets": [], "limit": limit})) })
    }
}

#[tokio::test]
async fn tickets_delegate_or_answer_not_configured() {
    let srv = start(with_token(Api::default())).await;
    for (m, p) in [
        ("POST", "/api/tickets"),
        ("POST", "/api/tickets/jira-soc/test"),
        ("GET", "/api/tickets?limit=5"),
    ] {
        let (code, v) = api_json(srv.addr, m, p, Some("{}")).await;
        assert_eq!(
            (code, error_of(&v)),
            (404, "ticketing not configured"),
            "{m} {p}"
        );
    }
    srv.stop.cancel();

    let fake = Arc::new(FakeTickets::default());
    let api = Api {
        tickets: Some(fake.clone()),
        ..with_token(Api::default())
    };
    let srv = start(api).await;
    let body = r#"{"ticket": "jira-soc", "event": {"logType": "detect", "category": "web"}}"#;
    let (code, v) = api_json(srv.addr, "POST", "/api/tickets", Some(body)).await;
    assert_eq!(code, 201);
    assert_eq!(v["key"], "SEC-1");
    assert_eq!(fake.issued.lock().unwrap()[0].1["category"], "web");
    for (bad, want) in [
        ("not json", "body is not JSON"),
        (r#"{"event": {}}"#, "`ticket`"),
        (r#"{"ticket": "jira-soc", "event": 3}"#, "`event`"),
    ] {
        let (code, v) = api_json(srv.addr, "POST", "/api/tickets", Some(bad)).await;
        assert_eq!(code, 400, "{bad}");
        assert!(error_of(&v).contains(want), "{v}");
    }
    let other = r#"{"ticket": "redmine", "event": {}}"#;
    assert_eq!(
        api_json(srv.addr, "POST", "/api/tickets", Some(other))
            .await
            .0,
        404
    );
    let (code, v) = api_json(srv.addr, "POST", "/api/tickets/jira-soc/test", None).await;
    assert_eq!((code, &v["key"]), (201, &json!("SEC-2")));
    let (code, v) = api_json(srv.addr, "POST", "/api/tickets/broken/test", None).await;
    assert_eq!((code, error_of(&v)), (502, "jira answered 500"));
    let (code, v) = api_json(srv.addr, "GET", "/api/tickets?limit=2", None).await;
    assert_eq!((code, v), (200, json!({"tickets": [], "limit": 2})));
    assert_eq!(
        api_json(srv.addr, "GET", "/api/tickets", None).await.1["limit"],
        50
    );
    assert_eq!(
        api_json(srv.addr, "GET", "/api/tickets?limit=0", None)
            .await
            .0,
        400
    );
    srv.stop.cancel();
}

#[tokio::test]
async fn slow_provider_gets_504_and_stop_is_graceful() {
    let api = Api {
        reload: Some(Arc::new(|| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(json!({}))
            })
        })),
        request_timeout: Duration::from_millis(200),
        ..with_token(Api::default())
    };
    let srv = start(api).await;
    let (code, v) = api_json(srv.addr, "POST", "/api/reload", None).await;
    assert_eq!(code, 504);
    assert!(error_of(&v).starts_with("no answer within"));

    // An idle keep-alive connection does not hold the stop up.
    let _idle = TcpStream::connect(srv.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    srv.stop.cancel();
    tokio::time::timeout(Duration::from_secs(7), srv.task)
        .await
        .expect("stopped in time")
        .unwrap();
    assert!(
        TcpStream::connect(srv.addr).await.is_err(),
        "listener closed"
    );
}

/// One parsed exposition: per metric family, its TYPE, whether it has HELP, and samples.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

/// A small Prometheus text-format (0.0.4) parser: `# HELP`, `# TYPE`, and
/// `name{label="value",...} value` lines with `\\`, `\"` and `\n` escapes in label values.
fn parse_prometheus(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            out.entry(name.into()).or_default().kind = kind.into();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            out.entry(name.into()).or_default().help = true;
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line:?}");
        let name_end = line.find(['{', ' ']).expect("sample name");
        let name = &line[..name_end];
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let (l, consumed) = parse_labels(body, line);
            labels = l;
            rest = &body[consumed..];
        }
        let value = rest.trim().split(' ').next().expect("value");
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value {v:?} in {line:?}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|base| out.contains_key(*base)))
            .unwrap_or(name);
        out.entry(family.into())
            .or_default()
            .samples
            .push((name.into(), labels, v));
    }
    out
}

/// Parses `k="v",k2="v2"}` (after `{`; `}` alone is no label); returns the labels and the
/// bytes up to and including `}`.
fn parse_labels(s: &str, line: &str) -> (BTreeMap<String, String>, usize) {
    let mut labels = BTreeMap::new();
    let b = s.as_bytes();
    if b.first() == Some(&b'}') {
        return (labels, 1);
    }
    let mut i = 0;
    loop {
        let eq = s[i..]
            .find('=')
            .map(|e| e + i)
            .unwrap_or_else(|| panic!("= in {line:?}"));
        let key = s[i..eq].to_owned();
        assert_eq!(b[eq + 1], b'"', "{line:?}");
        let mut j = eq + 2;
        let mut value = String::new();
        loop {
            match b[j] {
                b'\\' => {
                    value.push(match b[j + 1] {
                        b'n' => '\n',
                        c @ (b'\\' | b'"') => c as char,
                        c => panic!("bad escape {:?} in {line:?}", c as char),
                    });
                    j += 2;
                }
                b'"' => break,
                _ => {
                    let c = s[j..].chars().next().unwrap();
                    value.push(c);
                    j += c.len_utf8();
                }
            }
        }
        labels.insert(key, value);
        match b[j + 1] {
            b'}' => return (labels, j + 2),
            b',' => i = j + 2,
            c => panic!("unexpected {:?} in {line:?}", c as char),
        }
    }
}

#[tokio::test]
async fn metrics_scrape_parses_with_types_and_buckets() {
    use plura_forwarder::metrics as m;
    // Touch every metric as the services would: counters, gauges, histograms.
    let kind = |name: &str| {
        if name.ends_with("_total") {
            "counter"
        } else if name.ends_with("_seconds") {
            "histogram"
        } else {
            "gauge"
        }
    };
    for &name in m::ALL {
        match kind(name) {
            "counter" => metrics::counter!(name, "destination" => "soc \"q\"\\x").increment(3),
            "histogram" => {
                let h = metrics::histogram!(name, "destination" => "soc-siem");
                h.record(0.002);
                h.record(0.3);
            }
            _ => metrics::gauge!(name, "destination" => "soc-siem").set(1.0),
        }
    }
    // And compliance hits through a lookup (series registered at load, brought up to the
    // totals before each render, as the service does).
    let src = include_str!("../config/compliance.toml");
    let c = Arc::new(Compliance::from_toml_str(src, ComplianceMode::All).unwrap());
    let ev = decode(
        br#"{"logType":"detect","category":"host"}"#,
        None,
        &DecodeOptions::default(),
    )
    .unwrap();
    c.lookup(&ev).unwrap();

    let srv = start_with(Api::default(), Some(Arc::new(move || c.publish_metrics()))).await;
    let (code, headers, body) = call(srv.addr, "GET", "/metrics", None, None).await;
    assert_eq!(code, 200);
    assert!(headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let fams = parse_prometheus(&body);
    for &name in m::ALL {
        let f = fams.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(f.kind, kind(name), "{name}");
        assert!(f.help, "{name} has no HELP");
        assert!(!f.samples.is_empty(), "{name} has no samples");
    }
    for &name in [m::SEND_BATCH_SECONDS, m::END_TO_END_SECONDS].iter() {
        let f = &fams[name];
        let buckets: Vec<_> = f
            .samples
            .iter()
            .filter(|(n, _, _)| n.ends_with("_bucket"))
            .collect();
        assert_eq!(
            buckets.len(),
            m::LATENCY_BUCKETS.len() + 1,
            "{name}: one bucket per bound and +Inf"
        );
        let inf = buckets
            .iter()
            .find(|(_, l, _)| l["le"] == "+Inf")
            .expect("+Inf bucket");
        assert!(inf.2 >= 2.0);
        let le_0_005 = buckets
            .iter()
            .find(|(_, l, _)| l["le"] == "0.005")
            .expect("0.005 bucket");
        assert!(le_0_005.2 >= 1.0);
        assert!(f
            .samples
            .iter()
            .any(|(n, _, v)| n.ends_with("_count") && *v >= 2.0));
        assert!(f.samples.iter().any(|(n, _, _)| n.ends_with("_sum")));
    }
    let consumed = &fams[m::EVENTS_CONSUMED_TOTAL];
    assert!(consumed
        .samples
        .iter()
        .any(
            |(_, l, v)| l.get("destination").map(String::as_str) == Some("soc \"q\"\\x")
                && *v >= 3.0
        ));
    let hits = &fams[m::COMPLIANCE_HITS_TOTAL];
    assert!(hits
        .samples
        .iter()
        .any(
            |(_, l, v)| l.get("standard").map(String::as_str) == Some("pci_dss_3_2_1")
                && l.get("control").map(String::as_str) == Some("10.2.7")
                && *v >= 1.0
        ));
    assert!(hits
        .samples
        .iter()
        .any(|(_, l, _)| l.get("control").map(String::as_str) == Some("제15조")));
    srv.stop.cancel();
}

const BIN: &str = env!("CARGO_BIN_EXE_plura-forwarder");

/// Runs the binary from the crate root (where `config/compliance.toml` is), bounded.
fn cli(args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn send_test_command_reports_success_or_the_error() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("f.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[syslog]]\nname = \"soc\"\nprotocol = \"udp\"\naddress = \"{}\"\n\
             [[syslog]]\nname = \"down\"\nprotocol = \"tcp\"\naddress = \"{closed}\"\n",
            sock.local_addr().unwrap()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();

    let out = cli(&["send-test", "soc", "-c", &cfg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("soc: test message sent to 127.0.0.1:"),
        "{stdout}"
    );
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("the test datagram");
    let got = String::from_utf8_lossy(&buf[..n]);
    assert!(
        got.contains("테스트") && got.contains("plura-forwarder send-test"),
        "{got}"
    );

    let out = cli(&["send-test", "down", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: down: connecting to 127.0.0.1:"),
        "{stderr}"
    );

    let out = cli(&["send-test", "nope", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(destinations: soc, down)"));
}

#[test]
fn check_refuses_a_mapping_with_an_unknown_control_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("m.toml");
    std::fs::write(
        &mapping,
        format!(
            "{}\n[[filter]]\nfilter_id = \"F-1\"\npci_dss_3_2_1 = [\"10.6.9\"]\n",
            include_str!("../config/compliance.toml")
        ),
    )
    .unwrap();
    let cfg = dir.path().join("f.toml");
    std::fs::write(
        &cfg,
        format!(
            "[compliance]\nmapping_file = {:?}\n[[syslog]]\nname = \"d\"\naddress = \"127.0.0.1:514\"\n",
            mapping.display().to_string()
        ),
    )
    .unwrap();
    let out = cli(&["check", "-c", &cfg.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("filter[1] \"F-1\": pci_dss_3_2_1: unknown control id \"10.6.9\""),
        "{stderr}"
    );
    assert!(cli(&["check", "-c", "config/forwarder.toml"])
        .status
        .success());
}

/// The wiring the runtime (`cli/run_cmd.rs`) needs, exactly as the report shows it, so that
/// the snippet keeps compiling and working.
#[tokio::test]
async fn runtime_wiring_as_documented() {
    use std::sync::RwLock;

    use plura_forwarder::admin::DestinationsFn;
    use plura_forwarder::config::Config;

    std::env::set_var("WIRING_TEST_TOKEN", TOKEN);
    let mut cfg = config::from_toml_str(
        "[admin]\ntoken_env = \"WIRING_TEST_TOKEN\"\n\
         [[syslog]]\nname = \"d\"\nprotocol = \"udp\"\naddress = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    cfg.compliance.mapping_file =
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/compliance.toml").into();
    let listener = admin::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AdminState {
        before_render: None,
        extra_metrics: None,
        metrics: recorder(),
        ready: Arc::new(|| Ok(())),
    };
    let admin_stop = CancellationToken::new();

    // ---- begin: the runtime's wiring ----
    let compliance = Arc::new(
        Compliance::load(&cfg.compliance.mapping_file, cfg.compliance.mode)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .unwrap(), // run_cmd: `?`
    );
    // pipeline.set_compliance(Some(Arc::clone(&compliance)));   (in pipeline::run)
    let current: Arc<RwLock<Arc<Config>>> = Arc::new(RwLock::new(Arc::new(cfg.clone())));
    // Filled once the pipeline has its sinks (e.g. from RunOptions::on_start).
    let destinations: Arc<OnceLock<DestinationsFn>> = Arc::default();
    let api = admin::Api {
        destinations: Some({
            let d = Arc::clone(&destinations);
            Arc::new(move || d.get().map(|f| f()).unwrap_or_default())
        }),
        syslog_test: Some({
            let c = Arc::clone(&current);
            admin::syslog_tester(move |name| c.read().unwrap().destination(name).cloned())
        }),
        compliance: Some({
            let c = Arc::clone(&compliance);
            Arc::new(move || Some(c.report()))
        }),
        reload: Some({
            let c = Arc::clone(&current);
            Arc::new(move || {
                let c = Arc::clone(&c);
                Box::pin(async move {
                    let old = Arc::clone(&c.read().unwrap());
                    let new = old.reload().map_err(|e| e.errors().to_vec())?;
                    let mapping =
                        Compliance::load(&new.compliance.mapping_file, new.compliance.mode)
                            .map_err(|e| e.errors())?;
                    // Hand `new` and `mapping` (after mapping.carry_counts_from(&old_mapping))
                    // to the pipeline here; count config_reloads_total{outcome}.
                    drop(mapping);
                    let n = new.syslog.len();
                    *c.write().unwrap() = Arc::new(new);
                    Ok(json!({"reloaded": true, "destinations": n}))
                })
            })
        }),
        tickets: None, // Some(Arc::new(ticket_service)) once src/ticket implements admin::TicketApi
        ..admin::Api::from_config(&cfg.admin)
    };
    let admin_task = tokio::spawn(admin::serve_api(listener, state, api, admin_stop.clone()));
    // ---- end ----

    let _ = destinations.set(Arc::new(|| {
        vec![DestinationStatus {
            name: "d".into(),
            status: status(SinkState::Connected, 0, None),
            parked: false,
        }]
    }));
    let (code, v) = api_json(addr, "GET", "/api/destinations", None).await;
    assert_eq!((code, &v["destinations"][0]["name"]), (200, &json!("d")));
    let (code, v) = api_json(addr, "GET", "/api/compliance", None).await;
    assert_eq!((code, &v["mode"]), (200, &json!("registered")));
    // Loaded from a string: nothing to re-read, so reload refuses with the config's error.
    let (code, v) = api_json(addr, "POST", "/api/reload", None).await;
    assert_eq!(code, 400);
    assert!(error_of(&v).contains("not loaded from a file"), "{v}");
    let (code, _) = api_json(addr, "POST", "/api/syslog/d/test", None).await;
    assert_eq!(code, 200);
    admin_stop.cancel();
    tokio::time::timeout(LIMIT, admin_task)
        .await
        .unwrap()
        .unwrap();
}
