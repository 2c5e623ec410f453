//! Ticket linking ("티켓 시스템 연동", issue 6): a rate-limited side sink that opens one issue
//! per selected event in Jira (Cloud / Server), MantisBT or Redmine (ticketing.md).
//!
//! - [`TicketRouter`]: all `[[ticket]]` systems; [`TicketRouter::offer`] is called by the
//!   pipeline for each event it consumes and never waits (STYLE.md P10).
//! - [`sink`]: one task per system: queue, token bucket, retries, dedup, outcomes.
//! - [`jira`], [`mantis`], [`redmine`]: request and answer shapes; [`description`]: the text.
//! - [`history`]: the "발행 티켓" history on a Kafka topic, read back newest first.
//! - [`issue`] and [`test_ticket`]: one-shot library calls for the CLI (`ticket-test`).
//!
//! # Decisions where the contract is silent
//! - Summary: `[LEVEL] filterName from detectIp on serverName` (fallbacks: `serverIp`;
//!   `userActionCategoryName`, `detectDescription`, `serviceName eventName` for the title),
//!   `[PLURA]` without a risk level. Cut to 255 characters (MantisBT 128).
//! - Priority from `filterRiskLevel`: 9–10 / `Very-High` → Jira `Highest`, Mantis `urgent`,
//!   Redmine 4 (Urgent); 7–8 / `High` → `High`, `high`, 3; 4–6 / `Medium` → `Medium`,
//!   `normal`, 2; 1–3 / `Low` → `Low`, `low`, 1; 0 → `Lowest`, `low`, 1; `-` or unknown → no
//!   priority. A server that refuses the field (Jira "cannot be set", Redmine "Priority cannot
//!   be blank") gets the ticket once more without it.
//! - Labels (Jira): `plura`, `plura-<logType>`, `plura-<category>`, `fwd-<hash of event id>`
//!   (+ `test`). MantisBT gets the marker in `additional_information` (tags need rights),
//!   Redmine in the description.
//! - Dedup: a key (the `dedup_key` values) is remembered from the offer for
//!   `dedup_window_s`; a ticket that fails for good forgets it, so the next event may try
//!   again. Event ids are remembered at least an hour, and created tickets in the shared
//!   history are never made again for the same event id.
//! - Manual and test tickets are not rate limited, are tried once (plus the fallbacks), are
//!   counted in `tickets_total` and recorded in the history (`origin` manual / test).

pub mod bucket;
pub mod client;
pub mod dedup;
pub mod description;
pub mod error;
pub mod history;
pub mod jira;
pub mod mantis;
pub mod redmine;
pub mod sink;

use std::sync::Arc;

use serde_json::Value as Json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::TicketConfig;
use crate::event::{Event, Field};
use crate::route::Matcher;

pub use client::{Created, Target};
pub use description::{TicketContent, TicketEvent};
pub use error::TicketError;
pub use history::{History, HistoryRecord};
pub use sink::{Offered, Outcome, OutcomeCounts, SinkOptions, TicketHandle, TicketSink};

/// Creates one ticket for one event with a `[[ticket]]` table, without a running sink (no
/// rate limit, no history): one attempt plus the client's fallbacks.
///
/// # Errors
/// [`TicketError::NotAnObject`], the auth key cannot be read, or the system's error.
pub async fn issue(
    cfg: &TicketConfig,
    event_json: &Json,
    controls: &[(&str, &str)],
) -> Result<Created, TicketError> {
    let event = TicketEvent::from_json(event_json)?;
    let content = TicketContent::for_event(event, cfg.include_raw_log, controls);
    Target::new(cfg)?.create(&content).await
}

/// Creates one test ticket ("티켓 발행 테스트"): summary `[TEST] plura-forwarder connectivity
/// test <time>`, label `test`. For `ticket-test TICKET`.
///
/// # Errors
/// The auth key cannot be read, or the system's error (print it as it is).
pub async fn test_ticket(cfg: &TicketConfig) -> Result<Created, TicketError> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Target::new(cfg)?
        .create(&TicketContent::test(&cfg.name, &now))
        .await
}

/// Where a consumed event came from: names it (`topic/partition/offset`) when it has no
/// `eventId`.
#[derive(Debug, Clone, Copy)]
pub struct EventOrigin<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
}

/// The event id tickets are keyed by: `eventId`, else `topic/partition/offset` (event.md).
pub fn event_id(ev: &Event<'_>, origin: EventOrigin<'_>) -> String {
    match ev.text(Field::EventId) {
        Some(id) => id.to_owned(),
        None => format!("{}/{}/{}", origin.topic, origin.partition, origin.offset),
    }
}

/// Every `[[ticket]]` system with its `[ticket.when]`, the sinks' handles and the history.
#[derive(Debug)]
pub struct TicketRouter {
    sinks: Vec<(Option<Matcher>, TicketHandle)>,
    history: Arc<History>,
    tasks: Vec<JoinHandle<()>>,
}

impl TicketRouter {
    /// Starts one sink per `[[ticket]]` table (on the current tokio runtime).
    ///
    /// # Errors
    /// A ticket's auth key cannot be read (the message names the ticket), its HTTP client
    /// cannot be built, or its `[ticket.when]` does not compile.
    pub fn start(
        configs: &[TicketConfig],
        history: Arc<History>,
        opts: SinkOptions,
        cancel: CancellationToken,
    ) -> Result<Self, TicketError> {
        let mut sinks = Vec::with_capacity(configs.len());
        let mut tasks = Vec::with_capacity(configs.len());
        for cfg in configs {
            let matcher = match &cfg.when {
                Some(w) => Some(
                    Matcher::new(&w.select, &w.filter)
                        .map_err(|e| TicketError::Client(format!("ticket {}: {e}", cfg.name)))?,
                ),
                None => None,
            };
            let (handle, task) =
                TicketSink::spawn(cfg, Arc::clone(&history), opts.clone(), cancel.clone())?;
            sinks.push((matcher, handle));
            tasks.push(task);
        }
        Ok(TicketRouter {
            sinks,
            history,
            tasks,
        })
    }

    /// Whether any automatic ticket wants this event (to skip the compliance lookup when none
    /// does).
    pub fn wants(&self, ev: &Event<'_>) -> bool {
        self.sinks
            .iter()
            .any(|(m, _)| m.as_ref().is_some_and(|m| m.matches(ev)))
    }

    /// Offers one consumed event to every ticket system whose `[ticket.when]` matches it.
    /// Never waits. Call it only for events of partitions this instance owns (i.e. from the
    /// consuming pipeline), once per message. Returns how many systems queued it.
    pub fn offer(
        &self,
        ev: &Event<'_>,
        origin: EventOrigin<'_>,
        controls: &[(&str, &str)],
    ) -> usize {
        let mut id: Option<String> = None;
        let mut queued = 0;
        for (m, h) in &self.sinks {
            if !m.as_ref().is_some_and(|m| m.matches(ev)) {
                continue;
            }
            let id = id.get_or_insert_with(|| event_id(ev, origin));
            if h.offer(ev, id, controls) == Offered::Queued {
                queued += 1;
            }
        }
        queued
    }

    /// A ticket system by name.
    pub fn handle(&self, name: &str) -> Option<&TicketHandle> {
        self.sinks.iter().map(|(_, h)| h).find(|h| h.name() == name)
    }

    /// Every ticket system.
    pub fn handles(&self) -> impl Iterator<Item = &TicketHandle> {
        self.sinks.iter().map(|(_, h)| h)
    }

    /// `POST /api/tickets`: a manual ticket for one event, recorded in the history.
    ///
    /// # Errors
    /// [`TicketError::UnknownTicket`] (answer 404), [`TicketError::NotAnObject`] (400), or the
    /// system's error (502).
    pub async fn issue(
        &self,
        name: &str,
        event_json: &Json,
        controls: &[(&str, &str)],
    ) -> Result<Created, TicketError> {
        self.handle(name)
            .ok_or_else(|| TicketError::UnknownTicket(name.to_owned()))?
            .issue(event_json, controls)
            .await
    }

    /// `POST /api/tickets/{name}/test`: a test ticket, recorded in the history.
    ///
    /// # Errors
    /// [`TicketError::UnknownTicket`] (404), or the system's error (502).
    pub async fn test(&self, name: &str) -> Result<Created, TicketError> {
        self.handle(name)
            .ok_or_else(|| TicketError::UnknownTicket(name.to_owned()))?
            .test()
            .await
    }

    /// `GET /api/tickets?limit=N`: the history, newest first.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Waits for the sink tasks after the cancel token fired (or after dropping every handle).
    pub async fn join(self) {
        let TicketRouter { sinks, tasks, .. } = self;
        drop(sinks);
        for t in tasks {
            let _ = t.await;
        }
    }
}
