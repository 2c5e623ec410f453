//! The ticket side sink: one task per ticket system, fed by a bounded queue.
//!
//! [`TicketHandle::offer`] never waits: dedup is checked on the caller's thread and the event
//! is `try_send`-ed; a full queue counts as `rate_limited`. The task paces requests with a
//! token bucket (`rate_per_minute` / `burst`), honours `Retry-After` and Jira's rate-limit
//! headers, retries 429 / 5xx / transport errors with jittered backoff a bounded number of
//! times, and never retries 401 / 403 (Jira Data Center locks the account behind a CAPTCHA):
//! after one, automatic tickets fail without a request for [`SinkOptions::auth_pause`].
//! Every outcome is counted in `tickets_total{ticket,outcome}`; created and failed tickets are
//! written to the [`History`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::Counter;
use serde_json::Value as Json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::{TicketConfig, TicketSystem};
use crate::event::{Event, Field, Value};
use crate::metrics as m;
use crate::throttle::Throttle;

use super::bucket::TokenBucket;
use super::client::{Created, Target};
use super::dedup::{Dedup, Seen};
use super::description::{TicketContent, TicketEvent};
use super::error::TicketError;
use super::history::{History, HistoryRecord};

/// Tuning of a ticket sink; the defaults suit production, tests shorten the waits.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Events waiting for a token; beyond it they count as `rate_limited`. Default 256.
    pub queue_capacity: usize,
    /// HTTP attempts per ticket, the first included. Default 5.
    pub max_attempts: u32,
    /// First retry backoff (doubled each time, full jitter). Default 1 s.
    pub backoff_base: Duration,
    /// Longest backoff. Default 60 s.
    pub backoff_cap: Duration,
    /// An event that waited longer than this in the queue counts as `rate_limited`.
    /// Default 15 min.
    pub max_queue_wait: Duration,
    /// After a 401/403, automatic tickets fail without a request for this long. Default 60 s.
    pub auth_pause: Duration,
    /// MantisBT's anti-spam 429 has no `Retry-After`: wait this long. Default 5 min.
    pub mantis_429_wait: Duration,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            queue_capacity: 256,
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            max_queue_wait: Duration::from_secs(900),
            auth_pause: Duration::from_secs(60),
            mantis_429_wait: Duration::from_secs(300),
        }
    }
}

/// One ticket's fate, the `outcome` label of `tickets_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The system created the issue.
    Created,
    /// Same event id or dedup key within the window (or another replica ticketed it).
    Deduplicated,
    /// The queue was full, or the event waited too long for a token.
    RateLimited,
    /// The system refused it, or the retries ran out.
    Failed,
}

impl Outcome {
    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Deduplicated => "deduplicated",
            Outcome::RateLimited => "rate_limited",
            Outcome::Failed => "failed",
        }
    }

    const ALL: [Outcome; 4] = [
        Outcome::Created,
        Outcome::Deduplicated,
        Outcome::RateLimited,
        Outcome::Failed,
    ];
}

/// What [`TicketHandle::offer`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued for the task.
    Queued,
    /// Counted as deduplicated.
    Deduplicated,
    /// Counted as rate_limited (queue full).
    RateLimited,
}

/// The counts of one sink since it started (the same increments as `tickets_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// `created`.
    pub created: u64,
    /// `deduplicated`.
    pub deduplicated: u64,
    /// `rate_limited`.
    pub rate_limited: u64,
    /// `failed`.
    pub failed: u64,
}

struct Job {
    event: TicketEvent,
    controls: Vec<(String, String)>,
    dedup_key: Option<String>,
    queued_at: Instant,
}

struct Shared {
    target: Target,
    dedup: Mutex<Dedup>,
    counts: [AtomicU64; 4],
    counters: [Counter; 4],
    history: Arc<History>,
    log: Throttle,
    opts: SinkOptions,
}

impl Shared {
    fn count(&self, o: Outcome) {
        let i = o as usize;
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.counters[i].increment(1);
    }

    fn dedup(&self) -> std::sync::MutexGuard<'_, Dedup> {
        self.dedup.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn name(&self) -> &str {
        &self.target.cfg.name
    }

    async fn record(
        &self,
        event_id: &str,
        origin: &str,
        result: &Result<Created, TicketError>,
        attempts: u32,
    ) {
        let mut r = self.new_record(event_id, origin, attempts);
        match result {
            Ok(c) => {
                r.key.clone_from(&c.key);
                r.url.clone_from(&c.url);
                r.id.clone_from(&c.id);
                r.outcome = "created".into();
            }
            Err(e) => {
                r.error = Some(e.to_string());
                r.status = e.status();
            }
        }
        self.history.record(r).await;
    }

    /// A `failed` record without key or URL; the caller fills in the rest.
    fn new_record(&self, event_id: &str, origin: &str, attempts: u32) -> HistoryRecord {
        HistoryRecord {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ticket: self.name().to_owned(),
            system: self.target.system().to_owned(),
            event_id: event_id.to_owned(),
            key: String::new(),
            url: String::new(),
            id: None,
            project: self.target.cfg.project.clone(),
            outcome: "failed".into(),
            origin: origin.to_owned(),
            error: None,
            status: None,
            attempts,
            record_id: String::new(),
        }
    }
}

/// The sending side of one ticket sink; cheap to clone.
#[derive(Clone)]
pub struct TicketHandle {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TicketHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketHandle")
            .field("name", &self.shared.name())
            .finish()
    }
}

/// Starts ticket sinks.
#[derive(Debug)]
pub struct TicketSink;

impl TicketSink {
    /// Reads the auth key, builds the client and spawns the task (on the current tokio
    /// runtime). The task stops when `cancel` fires or every handle is dropped; what is still
    /// queued then is logged and dropped (tickets are a side path; offsets never wait on them).
    /// `tickets_total` counters are registered here, once, with the recorder current now.
    ///
    /// # Errors
    /// The auth key cannot be read, or the HTTP client cannot be built.
    pub fn spawn(
        cfg: &TicketConfig,
        history: Arc<History>,
        opts: SinkOptions,
        cancel: CancellationToken,
    ) -> Result<(TicketHandle, JoinHandle<()>), TicketError> {
        let target = Target::new(cfg).map_err(|e| match e {
            TicketError::Secret(s) => TicketError::Secret(format!("ticket {}: {s}", cfg.name)),
            e => e,
        })?;
        let counters = Outcome::ALL.map(|o| {
            metrics::counter!(m::TICKETS_TOTAL, "ticket" => cfg.name.clone(), "outcome" => o.label())
        });
        let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            dedup: Mutex::new(Dedup::new(
                Duration::from_secs(cfg.dedup_window_s),
                &cfg.dedup_key,
            )),
            target,
            counts: Default::default(),
            counters,
            history,
            log: Throttle::new(Duration::from_secs(60)),
            opts,
        });
        let task = tokio::spawn(run(Arc::clone(&shared), rx, cancel));
        Ok((TicketHandle { tx, shared }, task))
    }
}

impl TicketHandle {
    /// The `[[ticket]]` name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// The `[[ticket]]` table.
    pub fn config(&self) -> &TicketConfig {
        &self.shared.target.cfg
    }

    /// Counts since start.
    pub fn counts(&self) -> OutcomeCounts {
        let c = |o: Outcome| self.shared.counts[o as usize].load(Ordering::Relaxed);
        OutcomeCounts {
            created: c(Outcome::Created),
            deduplicated: c(Outcome::Deduplicated),
            rate_limited: c(Outcome::RateLimited),
            failed: c(Outcome::Failed),
        }
    }

    /// Offers one consumed event for an automatic ticket, without waiting. `event_id` is
    /// `eventId` or `topic/partition/offset`. Copies the event only when it is queued.
    pub fn offer(&self, ev: &Event<'_>, event_id: &str, controls: &[(&str, &str)]) -> Offered {
        let key = self
            .shared
            .dedup()
            .key_of(|f| field_text(ev, f).map(str::to_owned));
        self.enqueue(event_id, key, controls, || {
            TicketEvent::from_event(ev, event_id)
        })
    }

    /// [`TicketHandle::offer`] for an event already owned.
    pub fn offer_owned(&self, event: TicketEvent, controls: &[(&str, &str)]) -> Offered {
        let key = self.shared.dedup().key_of_event(&event);
        let id = event.id.clone();
        self.enqueue(&id, key, controls, move || event)
    }

    fn enqueue(
        &self,
        id: &str,
        key: Option<String>,
        controls: &[(&str, &str)],
        event: impl FnOnce() -> TicketEvent,
    ) -> Offered {
        let s = &self.shared;
        if s.history.was_created(s.name(), id) {
            s.count(Outcome::Deduplicated);
            return Offered::Deduplicated;
        }
        let checked = s.dedup().check(id, key, Instant::now());
        let dedup_key = match checked {
            Ok(k) => k,
            Err(Seen::EventId | Seen::Key) => {
                s.count(Outcome::Deduplicated);
                return Offered::Deduplicated;
            }
        };
        let job = Job {
            event: event(),
            controls: controls
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
            dedup_key,
            queued_at: Instant::now(),
        };
        match self.tx.try_send(job) {
            Ok(()) => Offered::Queued,
            Err(e) => {
                let job = match e {
                    mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
                };
                if let Some(k) = &job.dedup_key {
                    s.dedup().forget(k);
                }
                s.count(Outcome::RateLimited);
                if let Some(suppressed) = s.log.allow("queue_full") {
                    tracing::warn!(ticket = %s.name(), suppressed, "Ticket queue full; event not ticketed (rate_limited).");
                }
                Offered::RateLimited
            }
        }
    }

    /// A manual ticket for one event (`POST /api/tickets`): not rate limited, one attempt
    /// (plus the client's fallbacks), recorded in the history and counted.
    ///
    /// # Errors
    /// [`TicketError::NotAnObject`], or the system's error.
    pub async fn issue(
        &self,
        event_json: &Json,
        controls: &[(&str, &str)],
    ) -> Result<Created, TicketError> {
        let event = TicketEvent::from_json(event_json)?;
        let id = event.id.clone();
        // Remember the id so that the same event arriving later gets no automatic duplicate.
        let _ = self.shared.dedup().check(&id, None, Instant::now());
        let content = TicketContent::for_event(event, self.config().include_raw_log, controls);
        let r = self.shared.target.create(&content).await;
        self.finish(&id, "manual", &r, 1).await;
        r
    }

    /// A test ticket ("티켓 발행 테스트", `POST /api/tickets/{name}/test`), recorded in the
    /// history like any other.
    ///
    /// # Errors
    /// The system's error.
    pub async fn test(&self) -> Result<Created, TicketError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let content = TicketContent::test(self.name(), &now);
        let r = self.shared.target.create(&content).await;
        self.finish(&content.event.id, "test", &r, 1).await;
        r
    }

    async fn finish(
        &self,
        id: &str,
        origin: &str,
        r: &Result<Created, TicketError>,
        attempts: u32,
    ) {
        self.shared.count(if r.is_ok() {
            Outcome::Created
        } else {
            Outcome::Failed
        });
        self.shared.record(id, origin, r, attempts).await;
    }
}

/// A field's text for the dedup key: the classification for `logType` / `category` (also when
/// a topic binding supplied it), else the event's value.
fn field_text<'e>(ev: &'e Event<'_>, name: &str) -> Option<&'e str> {
    match Field::from_name(name) {
        Some(Field::LogType) => Some(ev.log_type.name()),
        Some(Field::Category) => Some(ev.category.name()),
        _ => ev.get_by_name(name).map(Value::as_text),
    }
}

async fn run(s: Arc<Shared>, mut rx: mpsc::Receiver<Job>, cancel: CancellationToken) {
    let cfg = &s.target.cfg;
    let mut bucket = TokenBucket::new(cfg.rate_per_minute, cfg.burst, Instant::now());
    let mut paused_until: Option<Instant> = None;
    let mut auth_failed_until: Option<Instant> = None;
    loop {
        // Wait for the server's pause and for a token *before* taking a job, so that waiting
        // jobs stay in the bounded queue, where a full queue is visible to offer().
        if let Some(t) = paused_until.take() {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = sleep_until(t) => {}
            }
        }
        if let Err(wait) = bucket.clone().try_take(Instant::now()) {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = sleep(wait) => {}
            }
            continue;
        }
        let job = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            job = rx.recv() => match job { Some(j) => j, None => break },
        };
        let now = Instant::now();
        if now.duration_since(job.queued_at) > s.opts.max_queue_wait {
            forget(&s, &job);
            s.count(Outcome::RateLimited);
            continue;
        }
        if s.history.was_created(s.name(), &job.event.id) {
            s.count(Outcome::Deduplicated);
            continue;
        }
        let _ = bucket.try_take(now);
        if let Some(until) = auth_failed_until.filter(|&t| now < t) {
            forget(&s, &job);
            s.count(Outcome::Failed);
            let wait = until.duration_since(now).as_secs();
            if let Some(suppressed) = s.log.allow("auth") {
                tracing::error!(ticket = %s.name(), suppressed, retry_in_s = wait,
                    "Ticket not sent: the system refused the credentials recently; fix the auth key.");
            }
            let mut r = s.new_record(&job.event.id, "auto", 0);
            r.error = Some(format!(
                "not sent: the system refused the credentials; next attempt in {wait} s"
            ));
            s.history.record(r).await;
            continue;
        }
        let id = job.event.id.clone();
        let content = TicketContent::for_event(
            job.event.clone(),
            cfg.include_raw_log,
            &pairs(&job.controls),
        );
        let (result, attempts) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = deliver(&s, &content, &mut bucket) => r,
        };
        if let Some(d) = s.target.take_pause_hint() {
            paused_until = Some(Instant::now() + d);
        }
        match &result {
            Ok(c) => {
                s.count(Outcome::Created);
                tracing::info!(ticket = %s.name(), event_id = %id, key = %c.key, url = %c.url, "Ticket created.");
            }
            Err(e) => {
                forget(&s, &job);
                s.count(Outcome::Failed);
                if matches!(e, TicketError::Auth { .. }) {
                    auth_failed_until = Some(Instant::now() + s.opts.auth_pause);
                }
                if let Some(suppressed) = s.log.allow(e.error_type()) {
                    tracing::error!(ticket = %s.name(), event_id = %id, error = %e, attempts, suppressed, "Ticket failed.");
                }
            }
        }
        s.record(&id, "auto", &result, attempts).await;
    }
    let left = rx.len();
    if left > 0 {
        tracing::warn!(ticket = %s.name(), left, "Ticket sink stopped with events still queued; they are not ticketed.");
    }
}

fn forget(s: &Shared, job: &Job) {
    if let Some(k) = &job.dedup_key {
        s.dedup().forget(k);
    }
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// Attempts with retries: `(result, attempts)`.
async fn deliver(
    s: &Shared,
    content: &TicketContent,
    bucket: &mut TokenBucket,
) -> (Result<Created, TicketError>, u32) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = s.target.create(content).await;
        let e = match r {
            Ok(c) => return (Ok(c), attempt),
            Err(e) => e,
        };
        if !e.is_retryable() || attempt >= s.opts.max_attempts {
            return (Err(e), attempt);
        }
        let wait = match (e.retry_after(), &e) {
            (Some(d), _) => d,
            (None, TicketError::RateLimited { .. })
                if s.target.cfg.system == TicketSystem::MantisBt =>
            {
                s.opts.mantis_429_wait
            }
            (None, _) => backoff(&s.opts, attempt),
        };
        if matches!(e, TicketError::RateLimited { .. }) {
            bucket.drain(Instant::now());
        }
        if let Some(suppressed) = s.log.allow("retry") {
            tracing::warn!(ticket = %s.name(), error = %e, attempt, wait_ms = wait.as_millis() as u64, suppressed, "Ticket attempt failed; retrying.");
        }
        sleep(wait).await;
    }
}

/// Full-jitter exponential backoff: uniform in [d/2, d], d = base · 2^(attempt−1), capped.
fn backoff(o: &SinkOptions, attempt: u32) -> Duration {
    let d = o
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(o.backoff_cap);
    let half = d / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        let o = SinkOptions {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(300),
            ..SinkOptions::default()
        };
        for _ in 0..50 {
            let b1 = backoff(&o, 1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
            let b5 = backoff(&o, 5);
            assert!(b5 >= Duration::from_millis(150) && b5 <= Duration::from_millis(300));
        }
    }
}
