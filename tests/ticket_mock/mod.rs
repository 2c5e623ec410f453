//! A scripted ticket-system server on 127.0.0.1 for the ticket tests: answers each request
//! with the next scripted reply (or the default), and keeps every request for asserts.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use plura_forwarder::config::{SecretSource, TicketConfig, TicketSystem};
use serde_json::Value;
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("request body is JSON")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub reason: Option<&'static str>,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            reason: None,
            headers: Vec::new(),
            body: body.into(),
        }
    }
    pub fn json(status: u16, body: Value) -> Self {
        Reply::new(status, body.to_string()).header("content-type", "application/json")
    }
    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    pub fn reason(mut self, r: &'static str) -> Self {
        self.reason = Some(r);
        self
    }
}

type Route = Arc<dyn Fn(&Seen) -> Option<Reply> + Send + Sync>;

#[derive(Clone)]
pub struct Mock {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    route: Arc<Mutex<Option<Route>>>,
}

impl Mock {
    /// Starts the server; `default` answers whenever the script is empty.
    pub async fn start(default: Reply) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock = Mock {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            script: Arc::default(),
            default: Arc::new(Mutex::new(default)),
            route: Arc::default(),
        };
        let m = mock.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let m = m.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let m = m.clone();
                        async move { Ok::<_, Infallible>(m.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        mock
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let seen = Seen {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
        };
        let route = self.route.lock().unwrap().clone();
        let reply = route
            .and_then(|r| r(&seen))
            .or_else(|| self.script.lock().unwrap().pop_front())
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        self.seen.lock().unwrap().push(seen);
        let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
        *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
        for (k, v) in reply.headers {
            resp.headers_mut().insert(k, v.parse().unwrap());
        }
        if let Some(r) = reply.reason {
            if let Ok(r) = hyper::ext::ReasonPhrase::try_from(r.as_bytes()) {
                resp.extensions_mut().insert(r);
            }
        }
        resp
    }

    /// Queues answers for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    /// Answers by request first (e.g. by path); `None` falls through to the script.
    pub fn route(&self, f: impl Fn(&Seen) -> Option<Reply> + Send + Sync + 'static) {
        *self.route.lock().unwrap() = Some(Arc::new(f));
    }

    pub fn set_default(&self, r: Reply) {
        *self.default.lock().unwrap() = r;
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A secret in a temporary file (no process-wide env changes between parallel tests).
pub fn secret_file(secret: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("key");
    std::fs::write(&p, format!("{secret}\n")).unwrap();
    (dir, p)
}

/// A `[[ticket]]` table as the config loader would give it.
pub fn ticket(
    name: &str,
    system: TicketSystem,
    version: &str,
    url: &str,
    key: PathBuf,
) -> TicketConfig {
    TicketConfig {
        name: name.into(),
        system,
        version: version.into(),
        url: url.into(),
        project: match system {
            TicketSystem::Jira => "SEC".into(),
            TicketSystem::MantisBt => "1".into(),
            TicketSystem::Redmine => "secops".into(),
        },
        auth: SecretSource::File(key),
        user: (system == TicketSystem::Jira && version == "cloud")
            .then(|| "soc@example.com".into()),
        issue_type: match system {
            TicketSystem::Jira => "Task".into(),
            TicketSystem::MantisBt => "General".into(),
            TicketSystem::Redmine => "3".into(),
        },
        include_raw_log: true,
        rate_per_minute: 30,
        burst: 10,
        dedup_window_s: 3600,
        dedup_key: vec!["filterId".into(), "serverIp".into()],
        when: None,
    }
}

/// The event.md example with a few changes per call.
pub fn event(id: &str, filter: &str, server_ip: &str) -> Value {
    serde_json::json!({
        "logType": "detect", "category": "web", "groupId": "acme", "eventId": id,
        "registerDate": "2022-06-16T12:28:29+09:00", "serverIp": server_ip, "serverName": "Harry-LP-L",
        "filterId": filter, "filterName": "컬럼 데이터 탈취", "filterCategoryName": "SQLI", "filterRiskLevel": 7,
        "detectIp": "172.16.20.192", "detectDescription": "/wordpress/index.php", "logUri": "/wordpress/index.php",
        "logMethod": "GET", "logStatus": "200", "logBlocked": "0",
        "logOrigin": "GET /wordpress/?id=1%20AND%201=1 HTTP/1.1"
    })
}

/// Polls `f` every 10 ms until it holds or `within` passes.
pub async fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}
