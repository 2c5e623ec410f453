//! `/api/*` of interfaces.md: bearer-token auth (constant-time), JSON everywhere, and the
//! endpoints delegating to providers the runtime plugs in ([`Api`]).
//!
//! `/api` is off (404) when no token is set; a missing or wrong token gets 401. Every error
//! body is `{"error": "…"}`; each request is bounded by [`Api::request_timeout`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::json_error;
use crate::config::{AdminConfig, SyslogConfig};
use crate::sink::{SinkState, SinkStatus};

/// A boxed, sendable future (the providers are trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Lists the syslog destinations for `GET /api/destinations`.
pub type DestinationsFn = Arc<dyn Fn() -> Vec<DestinationStatus> + Send + Sync>;
/// Sends a test message to the named destination (`POST /api/syslog/{name}/test`).
pub type SyslogTestFn =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Value, CallError>> + Send + Sync>;
/// The `GET /api/compliance` document; `None` when no mapping is loaded.
pub type ComplianceFn = Arc<dyn Fn() -> Option<Value> + Send + Sync>;
/// Re-reads the config (`POST /api/reload`): a JSON summary, or the errors.
pub type ReloadFn = Arc<dyn Fn() -> BoxFuture<'static, Result<Value, Vec<String>>> + Send + Sync>;

/// The ticket endpoints, implemented by the ticket module (ticketing.md).
pub trait TicketApi: Send + Sync {
    /// `POST /api/tickets`: issues a ticket in system `ticket` for one event; the answer (201)
    /// is `{"key", "url", "system"}`.
    fn issue(&self, ticket: String, event: Value) -> BoxFuture<'_, Result<Value, CallError>>;
    /// `POST /api/tickets/{name}/test`: a test ticket; 201 with the answer, or the error.
    fn test(&self, ticket: String) -> BoxFuture<'_, Result<Value, CallError>>;
    /// `GET /api/tickets?limit=N`: the history, newest first.
    fn history(&self, limit: usize) -> BoxFuture<'_, Result<Value, CallError>>;
}

/// Why a provider could not answer; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 404: no such destination or ticket system.
    #[error("{0}")]
    NotFound(String),
    /// 400: the request is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// 502: the remote system (syslog receiver, ticket system) failed.
    #[error("{0}")]
    Upstream(String),
    /// 503: not available now (starting, stopping).
    #[error("{0}")]
    Unavailable(String),
}

impl CallError {
    fn status(&self) -> StatusCode {
        match self {
            CallError::NotFound(_) => StatusCode::NOT_FOUND,
            CallError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CallError::Upstream(_) => StatusCode::BAD_GATEWAY,
            CallError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// One syslog destination as `GET /api/destinations` shows it.
#[derive(Debug, Clone)]
pub struct DestinationStatus {
    /// `[[syslog]] name`.
    pub name: String,
    /// The sink's snapshot ([`SinkHandle::status`](crate::sink::SinkHandle::status)).
    pub status: SinkStatus,
    /// Whether its events are being parked to the retry topic (delivery.md).
    pub parked: bool,
}

impl DestinationStatus {
    /// `state`: connected | reconnecting | parked (interfaces.md), or unavailable / closed.
    fn state(&self) -> &'static str {
        if self.parked {
            return "parked";
        }
        match self.status.state {
            SinkState::Connected => "connected",
            SinkState::Connecting | SinkState::Reconnecting => "reconnecting",
            other => other.as_str(),
        }
    }

    fn to_json(&self) -> Value {
        let s = &self.status;
        json!({
            "name": self.name,
            "state": self.state(),
            "connection": s.state.as_str(),
            "queue_depth": s.queued,
            "last_error": s.last_error,
            "in_flight": s.in_flight,
            "accepted": s.accepted,
            "acked": s.acked,
            "resent": s.resent,
            "reconnects": s.reconnects,
            "bytes_written": s.written_bytes,
        })
    }
}

/// The bearer token; never printed.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl Token {
    /// A token from its text; `None` when empty.
    pub fn new(s: &str) -> Option<Self> {
        (!s.is_empty()).then(|| Token(s.as_bytes().into()))
    }

    /// The token in environment variable `var` (surrounding whitespace dropped); `None` when
    /// `var` is empty, unset or holds nothing.
    pub fn from_env(var: &str) -> Option<Self> {
        if var.is_empty() {
            return None;
        }
        Self::new(std::env::var(var).ok()?.trim())
    }

    /// Compares `given` with the token in time that depends only on the token's length: no
    /// early exit on the first differing byte or on a length mismatch.
    pub fn matches(&self, given: &[u8]) -> bool {
        let want = &self.0;
        let mut diff = u8::from(given.len() != want.len());
        for (i, &w) in want.iter().enumerate() {
            let g = given.get(i).copied().unwrap_or(!w);
            diff |= std::hint::black_box(g ^ w);
        }
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What `/api/*` needs: the token and the providers. Absent providers answer 404 (tickets:
/// "ticketing not configured"; compliance: no mapping) or an empty list (destinations).
#[derive(Clone)]
pub struct Api {
    /// `None`: `/api` is off (404).
    pub token: Option<Token>,
    /// The variable the token comes from (named in the "off" answer).
    pub token_env: String,
    /// `GET /api/destinations`.
    pub destinations: Option<DestinationsFn>,
    /// `POST /api/syslog/{name}/test`.
    pub syslog_test: Option<SyslogTestFn>,
    /// `GET /api/compliance`.
    pub compliance: Option<ComplianceFn>,
    /// `POST /api/reload`.
    pub reload: Option<ReloadFn>,
    /// `/api/tickets*`.
    pub tickets: Option<Arc<dyn TicketApi>>,
    /// Bound on one request, body included (504 after it). Default 20 s.
    pub request_timeout: Duration,
    /// Largest request body. Default 2 MiB.
    pub max_body_bytes: usize,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            token: None,
            token_env: "PLURA_FORWARDER_ADMIN_TOKEN".into(),
            destinations: None,
            syslog_test: None,
            compliance: None,
            reload: None,
            tickets: None,
            request_timeout: Duration::from_secs(20),
            max_body_bytes: 2 * 1024 * 1024,
        }
    }
}

impl Api {
    /// No providers yet; the token from the environment variable `admin.token_env` names.
    pub fn from_config(admin: &AdminConfig) -> Self {
        Api {
            token: Token::from_env(&admin.token_env),
            token_env: admin.token_env.clone(),
            ..Api::default()
        }
    }
}

/// A [`SyslogTestFn`] over the destinations `find` returns by name (read at each call, so
/// that a reload is seen): [`send_test`](super::send_test) with a 10 s limit.
pub fn syslog_tester(
    find: impl Fn(&str) -> Option<SyslogConfig> + Send + Sync + 'static,
) -> SyslogTestFn {
    Arc::new(move |name: String| {
        let dest = find(&name);
        Box::pin(async move {
            let dest =
                dest.ok_or_else(|| CallError::NotFound(format!("no syslog destination {name:?}")))?;
            match super::send_test(&dest, Duration::from_secs(10)).await {
                Ok(sent) => Ok(json!({
                    "destination": name,
                    "result": "sent",
                    "bytes": sent.bytes,
                    "elapsed_ms": sent.elapsed.as_millis() as u64,
                })),
                Err(e) => Err(CallError::Upstream(format!("{name}: {e}"))),
            }
        })
    })
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn unauthorized(msg: &str) -> Resp {
    let mut r = json_error(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"plura-forwarder\""),
    );
    r
}

fn call_error(e: &CallError) -> Resp {
    json_error(e.status(), &e.to_string())
}

/// `Authorization: Bearer <token>`, the scheme case-insensitive.
fn bearer(req: &Request<Incoming>) -> Option<&[u8]> {
    let v = req.headers().get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Handles one `/api` request, bounded by `api.request_timeout`.
pub(super) async fn handle(api: &Api, req: Request<Incoming>) -> Resp {
    let Some(token) = &api.token else {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!(
                "the admin API is off: set the environment variable {} to a token",
                if api.token_env.is_empty() {
                    "named by admin.token_env"
                } else {
                    &api.token_env
                }
            ),
        );
    };
    match bearer(&req) {
        None => return unauthorized("missing bearer token"),
        Some(given) if !token.matches(given) => return unauthorized("wrong bearer token"),
        Some(_) => {}
    }
    match tokio::time::timeout(api.request_timeout, route(api, req)).await {
        Ok(r) => r,
        Err(_) => json_error(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("no answer within {:?}", api.request_timeout),
        ),
    }
}

async fn route(api: &Api, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path
        .trim_start_matches("/api")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = req.method().clone();
    match (segs.as_slice(), method) {
        (["destinations"], Method::GET) => {
            let list: Vec<Value> = api
                .destinations
                .as_ref()
                .map(|f| f().iter().map(DestinationStatus::to_json).collect())
                .unwrap_or_default();
            json_response(StatusCode::OK, &json!({ "destinations": list }))
        }
        (["destinations"], _) => method_not_allowed("GET"),
        (["syslog", name, "test"], Method::POST) => {
            let Some(test) = &api.syslog_test else {
                return json_error(StatusCode::NOT_FOUND, "syslog tests are not available");
            };
            match test(percent_decode(name)).await {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => call_error(&e),
            }
        }
        (["syslog", _, "test"], _) => method_not_allowed("POST"),
        (["compliance"], Method::GET) => match api.compliance.as_ref().and_then(|f| f()) {
            Some(v) => json_response(StatusCode::OK, &v),
            None => json_error(StatusCode::NOT_FOUND, "no compliance mapping is loaded"),
        },
        (["compliance"], _) => method_not_allowed("GET"),
        (["reload"], Method::POST) => {
            let Some(reload) = &api.reload else {
                return json_error(StatusCode::NOT_FOUND, "reload is not available");
            };
            match reload().await {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(errors) => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({
                        "error": format!("configuration refused; the running one stays: {}", errors.join("; ")),
                        "errors": errors,
                    }),
                ),
            }
        }
        (["reload"], _) => method_not_allowed("POST"),
        (["tickets", ..], _) if api.tickets.is_none() => {
            json_error(StatusCode::NOT_FOUND, "ticketing not configured")
        }
        (["tickets"], Method::POST) => {
            let t = api.tickets.as_ref().expect("checked");
            let body = match read_json(req, api.max_body_bytes).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            let Some(ticket) = body.get("ticket").and_then(Value::as_str) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "body: `ticket` (the [[ticket]] name) is required",
                );
            };
            let Some(event) = body.get("event").filter(|e| e.is_object()) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "body: `event` (a JSON object) is required",
                );
            };
            match t.issue(ticket.to_owned(), event.clone()).await {
                Ok(v) => json_response(StatusCode::CREATED, &v),
                Err(e) => call_error(&e),
            }
        }
        (["tickets"], Method::GET) => {
            let t = api.tickets.as_ref().expect("checked");
            let limit = match query_limit(req.uri().query()) {
                Ok(l) => l,
                Err(msg) => return json_error(StatusCode::BAD_REQUEST, &msg),
            };
            match t.history(limit).await {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(e) => call_error(&e),
            }
        }
        (["tickets"], _) => method_not_allowed("GET, POST"),
        (["tickets", name, "test"], Method::POST) => {
            let t = api.tickets.as_ref().expect("checked");
            match t.test(percent_decode(name)).await {
                Ok(v) => json_response(StatusCode::CREATED, &v),
                Err(e) => call_error(&e),
            }
        }
        (["tickets", _, "test"], _) => method_not_allowed("POST"),
        _ => json_error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Default and largest `limit` of `GET /api/tickets`.
const LIMIT_DEFAULT: usize = 50;
const LIMIT_MAX: usize = 1000;

fn query_limit(query: Option<&str>) -> Result<usize, String> {
    let Some(v) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("limit="))
    else {
        return Ok(LIMIT_DEFAULT);
    };
    match v.parse::<usize>() {
        Ok(n) if (1..=LIMIT_MAX).contains(&n) => Ok(n),
        _ => Err(format!("limit {v:?}: expected 1 to {LIMIT_MAX}")),
    }
}

/// `%XX` in a path segment (names are plain ASCII in practice; invalid escapes stay as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_json(req: Request<Incoming>, max: usize) -> Result<Value, Resp> {
    let body = Limited::new(req.into_body(), max)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("body larger than {max} bytes"),
                )
            } else {
                json_error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| json_error(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matching() {
        let t = Token::new("s3cret").unwrap();
        assert!(t.matches(b"s3cret"));
        for bad in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"\0\0\0\0\0\0"] {
            assert!(!t.matches(bad), "{bad:?}");
        }
        assert!(Token::new("").is_none());
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn limits_and_names() {
        assert_eq!(query_limit(None), Ok(50));
        assert_eq!(query_limit(Some("x=1&limit=7")), Ok(7));
        assert!(query_limit(Some("limit=0")).is_err());
        assert!(query_limit(Some("limit=abc")).is_err());
        assert_eq!(percent_decode("soc%20siem"), "soc siem");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%ED%85%8C"), "테");
    }
}
