//! The HTTP side shared by the three clients: one `reqwest` client per ticket system, one POST
//! per attempt, status → [`TicketError`] (ticketing.md §6.1), `Retry-After` and Jira's
//! `X-RateLimit-*` headers (§6.2).

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::config::{TicketConfig, TicketSystem};

use super::description::TicketContent;
use super::error::TicketError;
use super::{jira, mantis, redmine};

/// One created issue: what the admin API and `ticket-test` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// Jira `SEC-24`; MantisBT and Redmine `#123`; MantisBT `(moderated)` when a moderation
    /// plugin accepted it without an id (HTTP 202).
    pub key: String,
    /// The human URL (`{base}/browse/SEC-24`, `{base}/view.php?id=123`, `{base}/issues/123`).
    pub url: String,
    /// `jira`, `mantisbt` or `redmine`.
    pub system: String,
    /// The system's numeric id (Jira keys change when an issue moves; ids do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The longest wait a server's `Retry-After` may impose on one attempt.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The raw-log excerpt (characters) of the one retry after "too large".
pub const SHORT_RAW_LOG: usize = 4000;

/// Jira "The entered text is too long…", MantisBT "must be shorter than…" (code 28).
fn is_too_long(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("too long") || m.contains("shorter than") || m.contains("exceeds the allowed limit")
}

/// Per-request timeout (connect included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured ticket system with its secret read and its HTTP client built.
#[derive(Debug)]
pub struct Target {
    /// The `[[ticket]]` table.
    pub cfg: TicketConfig,
    pub(crate) secret: String,
    pub(crate) http: reqwest::Client,
    /// MantisBT without URL rewriting answers at `/api/rest/index.php/...`; remembered once seen.
    pub(crate) mantis_index_php: AtomicBool,
    /// Set by a success that said "no requests left" (Jira `X-RateLimit-Remaining: 0`).
    pause_hint: Mutex<Option<Duration>>,
    /// Redmine: the tracker id a tracker *name* resolved to (`None` inside: no such tracker).
    pub(crate) redmine_tracker: Mutex<Option<Option<u64>>>,
}

impl Target {
    /// Reads the auth key and builds the HTTP client (rustls, webpki roots).
    ///
    /// # Errors
    /// The key cannot be read, or the TLS client cannot be built.
    pub fn new(cfg: &TicketConfig) -> Result<Self, TicketError> {
        let secret = cfg.auth.read().map_err(TicketError::Secret)?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("plura-forwarder/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TicketError::Client(e.to_string()))?;
        Ok(Target {
            cfg: cfg.clone(),
            secret,
            http,
            mantis_index_php: AtomicBool::new(false),
            pause_hint: Mutex::new(None),
            redmine_tracker: Mutex::new(None),
        })
    }

    /// `jira`, `mantisbt` or `redmine`.
    pub fn system(&self) -> &'static str {
        self.cfg.system.name()
    }

    /// The base URL without a trailing `/`.
    pub fn base(&self) -> &str {
        self.cfg.url.trim_end_matches('/')
    }

    /// Creates one issue: one attempt, plus the fallbacks a client knows (Jira and Redmine
    /// retry once without a priority the server refused; MantisBT falls back to `index.php`).
    ///
    /// # Errors
    /// The server's refusal or the transport error, classified.
    pub async fn create(&self, content: &TicketContent) -> Result<Created, TicketError> {
        match self.create_once(content).await {
            // Body too big for a proxy (413), or a text field over the instance's limit
            // (Jira DC's limit is configurable): once more with a short raw-log excerpt.
            Err(TicketError::Rejected {
                status, message, ..
            }) if content
                .raw_log
                .as_ref()
                .is_some_and(|r| r.len() > SHORT_RAW_LOG)
                && (status == 413 || is_too_long(&message)) =>
            {
                tracing::warn!(ticket = %self.cfg.name, status, error = %message, "Ticket too large; retrying with a shorter raw log.");
                let mut shorter = content.clone();
                shorter.raw_log = shorter
                    .raw_log
                    .map(|r| super::description::clean_raw(&r, SHORT_RAW_LOG));
                self.create_once(&shorter).await
            }
            r => r,
        }
    }

    async fn create_once(&self, content: &TicketContent) -> Result<Created, TicketError> {
        match self.cfg.system {
            TicketSystem::Jira => jira::create(self, content).await,
            TicketSystem::MantisBt => mantis::create(self, content).await,
            TicketSystem::Redmine => redmine::create(self, content).await,
        }
    }

    /// POSTs `body` as JSON with one auth header; returns the status, headers and body text.
    pub(crate) async fn post(
        &self,
        url: &str,
        auth: (HeaderName, HeaderValue),
        body: &Json,
    ) -> Result<Reply, TicketError> {
        self.send(self.http.post(url).json(body), auth).await
    }

    /// GETs `url` with one auth header (lookups such as Redmine's tracker list).
    pub(crate) async fn get(
        &self,
        url: &str,
        auth: (HeaderName, HeaderValue),
    ) -> Result<Reply, TicketError> {
        self.send(self.http.get(url), auth).await
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        auth: (HeaderName, HeaderValue),
    ) -> Result<Reply, TicketError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let mut auth_value = auth.1;
        auth_value.set_sensitive(true);
        headers.insert(auth.0, auth_value);
        let resp = req
            .headers(headers)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .and_then(|r| std::str::from_utf8(r.as_bytes()).ok())
            .map(str::to_owned);
        let headers = resp.headers().clone();
        if status.is_success() {
            if let Some(d) = pause_after_success(&headers) {
                *self.pause_hint.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
            }
        }
        let body = resp.text().await.map_err(|e| self.transport(&e))?;
        Ok(Reply {
            status,
            reason,
            headers,
            body,
        })
    }

    /// The pause a success asked for, once.
    pub fn take_pause_hint(&self) -> Option<Duration> {
        self.pause_hint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn transport(&self, e: &reqwest::Error) -> TicketError {
        // The URL is ours; the error chain says connect / timeout / reset. No secrets in it.
        let mut message = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        TicketError::Transport {
            system: self.system(),
            message,
        }
    }

    /// Builds an auth header value; a key with characters HTTP cannot carry is a config error.
    pub(crate) fn header_value(&self, v: &str) -> Result<HeaderValue, TicketError> {
        HeaderValue::from_str(v).map_err(|_| {
            TicketError::Secret("the auth key holds characters an HTTP header cannot carry".into())
        })
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    /// A non-standard reason phrase (MantisBT puts its error text there).
    pub reason: Option<String>,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Json> {
        serde_json::from_str(&self.body).ok()
    }

    /// Maps a non-success answer to an error; `message` is the system's parsed error text.
    pub fn error(&self, system: &'static str, message: String) -> TicketError {
        let message = if message.is_empty() {
            self.fallback_message()
        } else {
            message
        };
        let status = self.status.as_u16();
        match status {
            401 | 403 => TicketError::Auth {
                system,
                status,
                message,
            },
            429 => TicketError::RateLimited {
                system,
                retry_after: retry_after(&self.headers),
                message,
            },
            500..=599 => TicketError::Server {
                system,
                status,
                retry_after: retry_after(&self.headers),
                message,
            },
            _ => TicketError::Rejected {
                system,
                status,
                message,
            },
        }
    }

    /// A reason phrase the server chose, else a short non-HTML body.
    fn fallback_message(&self) -> String {
        if let Some(r) = &self.reason {
            if Some(r.as_str()) != self.status.canonical_reason() {
                return r.clone();
            }
        }
        let b = self.body.trim();
        if b.is_empty() || b.starts_with('<') {
            return String::new();
        }
        super::description::truncate_chars(&super::description::one_line(b), 300)
    }
}

/// The wait a response asks for: `Retry-After` (delta-seconds or HTTP-date), else Jira's
/// `X-RateLimit-Reset` (ISO-8601 `yyyy-MM-ddTHH:mmZ`). Capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let now = chrono::Utc::now();
    let until = |t: chrono::DateTime<chrono::Utc>| (t - now).to_std().unwrap_or(Duration::ZERO);
    let d = if let Some(v) = h.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Ok(s) = v.parse::<u64>() {
            Some(Duration::from_secs(s))
        } else if let Ok(s) = v.parse::<f64>() {
            Duration::try_from_secs_f64(s).ok()
        } else {
            chrono::DateTime::parse_from_rfc2822(v)
                .ok()
                .map(|t| until(t.with_timezone(&chrono::Utc)))
        }
    } else {
        h.get("x-ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_reset)
            .map(until)
    };
    d.map(|d| d.min(MAX_RETRY_AFTER))
}

fn parse_reset(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let v = v.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%MZ")
        .ok()
        .map(|n| n.and_utc())
}

/// After a success: Jira's `X-RateLimit-Remaining: 0` with a reset time means "wait before the
/// next request".
pub(crate) fn pause_after_success(h: &HeaderMap) -> Option<Duration> {
    let remaining = h
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())?;
    if remaining > 0 {
        return None;
    }
    retry_after(h)
}

/// `s` as a JSON number when it is all digits (ids), else as a string.
pub(crate) fn id_or_name(s: &str, id_key: &str, name_key: &str) -> Json {
    let s = s.trim();
    let mut m = serde_json::Map::new();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        m.insert(id_key.to_owned(), Json::String(s.to_owned()));
    } else {
        m.insert(name_key.to_owned(), Json::String(s.to_owned()));
    }
    Json::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        let mut h = HeaderMap::new();
        let soon = (chrono::Utc::now() + chrono::Duration::minutes(3))
            .format("%Y-%m-%dT%H:%MZ")
            .to_string();
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&soon).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(60) && d <= Duration::from_secs(180),
            "{d:?}"
        );
        assert_eq!(pause_after_success(&h), None);
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        assert!(pause_after_success(&h).is_some());
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn ids_and_names() {
        assert_eq!(
            id_or_name("10002", "id", "name"),
            serde_json::json!({"id": "10002"})
        );
        assert_eq!(
            id_or_name("Task", "id", "name"),
            serde_json::json!({"name": "Task"})
        );
    }
}
