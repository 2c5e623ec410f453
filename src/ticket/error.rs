//! Why a ticket was not created, classified the way ticketing.md §6 asks: retryable
//! (transport, 429, 5xx) or permanent (credentials, validation, wrong URL).

use std::time::Duration;

/// A ticket system's answer that is not a created issue, or a failure to reach it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TicketError {
    /// The auth key could not be read (the text names the variable or file, never the key).
    #[error("auth key: {0}")]
    Secret(String),
    /// The HTTP client could not be built (TLS roots, …).
    #[error("HTTP client: {0}")]
    Client(String),
    /// No `[[ticket]]` table by that name.
    #[error("no ticket system named {0:?}")]
    UnknownTicket(String),
    /// The event given for a manual ticket is not a JSON object.
    #[error("the event must be a JSON object")]
    NotAnObject,
    /// 401 or 403: credentials wrong, expired, or without permission. Never retried (Jira Data
    /// Center locks the account behind a CAPTCHA after repeated failed logins).
    #[error("{system} refused the credentials: HTTP {status}{}", detail(.message))]
    Auth {
        /// `jira`, `mantisbt` or `redmine`.
        system: &'static str,
        /// 401 or 403.
        status: u16,
        /// The server's text, when it sent one.
        message: String,
    },
    /// Any other 4xx except 429: the server's validation message (not retryable).
    #[error("{system} rejected the ticket: HTTP {status}{}", detail(.message))]
    Rejected {
        /// `jira`, `mantisbt` or `redmine`.
        system: &'static str,
        /// The HTTP status.
        status: u16,
        /// The server's error text (Jira `errorMessages` + `errors`, Redmine `errors`, Mantis `message`).
        message: String,
    },
    /// 429: rate limited by the server (or a proxy in front of it).
    #[error("{system} is rate limiting: HTTP 429{}", detail(.message))]
    RateLimited {
        /// `jira`, `mantisbt` or `redmine`.
        system: &'static str,
        /// `Retry-After` or `X-RateLimit-Reset`, when given.
        retry_after: Option<Duration>,
        /// The server's text.
        message: String,
    },
    /// 5xx.
    #[error("{system} server error: HTTP {status}{}", detail(.message))]
    Server {
        /// `jira`, `mantisbt` or `redmine`.
        system: &'static str,
        /// The HTTP status.
        status: u16,
        /// `Retry-After`, when given (Jira sends it on some 503s).
        retry_after: Option<Duration>,
        /// The server's text.
        message: String,
    },
    /// Connect error, timeout, or the connection dropped.
    #[error("{system} unreachable: {message}")]
    Transport {
        /// `jira`, `mantisbt` or `redmine`.
        system: &'static str,
        /// What the HTTP client said.
        message: String,
    },
    /// A success status whose body did not say what was created.
    #[error("{system} answered HTTP {status} with an unexpected body: {message}")]
    BadResponse {
        /// `jira`, `mantisbt` or `redmine`.
        system: &'static str,
        /// The HTTP status.
        status: u16,
        /// What was wrong.
        message: String,
    },
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl TicketError {
    /// Whether another attempt may succeed: transport errors, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TicketError::Transport { .. }
                | TicketError::RateLimited { .. }
                | TicketError::Server { .. }
        )
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TicketError::RateLimited { retry_after, .. }
            | TicketError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status the server answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            TicketError::Auth { status, .. }
            | TicketError::Rejected { status, .. }
            | TicketError::Server { status, .. }
            | TicketError::BadResponse { status, .. } => Some(*status),
            TicketError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// A bounded label for logs and throttling keys.
    pub const fn error_type(&self) -> &'static str {
        match self {
            TicketError::Secret(_) => "secret",
            TicketError::Client(_) => "client",
            TicketError::UnknownTicket(_) => "unknown_ticket",
            TicketError::NotAnObject => "not_an_object",
            TicketError::Auth { .. } => "auth",
            TicketError::Rejected { .. } => "rejected",
            TicketError::RateLimited { .. } => "rate_limited",
            TicketError::Server { .. } => "server",
            TicketError::Transport { .. } => "transport",
            TicketError::BadResponse { .. } => "bad_response",
        }
    }
}
