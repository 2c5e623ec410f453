//! The running service assembled: compliance, tickets, the pipeline and the admin API.
//!
//! `run` (the CLI) calls [`serve`]; tests can call it with their own shutdown token.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::admin::{self, AdminState, BoxFuture, CallError, DestinationStatus, TicketApi};
use crate::compliance::Compliance;
use crate::config::Config;
use crate::event::{decode, DecodeOptions};
use crate::pipeline::{self, RunOptions, StartInfo};
use crate::source::Trackers;
use crate::ticket::{History, SinkOptions, TicketError, TicketRouter};

/// The ticket systems as the admin API sees them.
struct TicketService {
    router: Arc<TicketRouter>,
    compliance: Arc<Compliance>,
}

fn call_error(e: TicketError) -> CallError {
    match e {
        TicketError::UnknownTicket(name) => {
            CallError::NotFound(format!("no [[ticket]] named {name:?}"))
        }
        TicketError::NotAnObject => CallError::BadRequest(e.to_string()),
        other => CallError::Upstream(other.to_string()),
    }
}

impl TicketApi for TicketService {
    fn issue(&self, ticket: String, event: Value) -> BoxFuture<'_, Result<Value, CallError>> {
        Box::pin(async move {
            // The controls of a manual ticket come from the same mapping (not counted as a hit).
            let bytes = serde_json::to_vec(&event).unwrap_or_default();
            let controls: Vec<(String, String)> = decode(&bytes, None, &DecodeOptions::default())
                .ok()
                .and_then(|ev| {
                    self.compliance.peek(&ev).map(|c| {
                        c.pairs()
                            .map(|(s, i)| (s.to_owned(), i.to_owned()))
                            .collect()
                    })
                })
                .unwrap_or_default();
            let pairs: Vec<(&str, &str)> = controls
                .iter()
                .map(|(s, i)| (s.as_str(), i.as_str()))
                .collect();
            let created = self
                .router
                .issue(&ticket, &event, &pairs)
                .await
                .map_err(call_error)?;
            Ok(serde_json::to_value(created).unwrap_or(Value::Null))
        })
    }

    fn test(&self, ticket: String) -> BoxFuture<'_, Result<Value, CallError>> {
        Box::pin(async move {
            let created = self.router.test(&ticket).await.map_err(call_error)?;
            Ok(serde_json::to_value(created).unwrap_or(Value::Null))
        })
    }

    fn history(&self, limit: usize) -> BoxFuture<'_, Result<Value, CallError>> {
        let records = self.router.history().list(limit);
        Box::pin(async move { Ok(json!({ "tickets": records })) })
    }
}

/// Runs the pipeline, the ticket systems and the admin listener until `shutdown` is cancelled,
/// then drains within `shutdown_grace_s`.
///
/// # Errors
/// When the admin address cannot be bound, the metrics recorder cannot be installed, the
/// compliance mapping or a ticket system cannot be loaded, or the Kafka clients cannot be
/// created.
pub async fn serve(
    cfg: Config,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let handle = crate::metrics::install()?;
    let listener = admin::bind(&cfg.admin.listen).await?;
    let compliance = Arc::new(
        Compliance::load(&cfg.compliance.mapping_file, cfg.compliance.mode)
            .map_err(|e| anyhow::anyhow!(e.errors().join("\n")))
            .context("loading the compliance mapping")?,
    );

    let ticket_stop = tokio_util::sync::CancellationToken::new();
    let tickets = if cfg.ticket.is_empty() {
        None
    } else {
        let (brokers, props, topic) = (
            cfg.kafka.brokers.clone(),
            cfg.kafka.properties.clone(),
            cfg.kafka.ticket_history_topic.clone(),
        );
        let history = tokio::task::spawn_blocking(move || {
            History::start(
                &brokers,
                &props,
                &topic,
                crate::ticket::history::DEFAULT_CAPACITY,
                Duration::from_secs(10),
            )
        })
        .await?
        .context("loading the ticket history")?;
        let router = TicketRouter::start(
            &cfg.ticket,
            Arc::new(history),
            SinkOptions::default(),
            ticket_stop.clone(),
        )
        .context("starting the ticket systems")?;
        Some(Arc::new(router))
    };

    let trackers: Arc<OnceLock<Arc<Trackers>>> = Arc::default();
    let statuses: Arc<OnceLock<Vec<(String, crate::sink::StatusReader, pipeline::ParkFlag)>>> =
        Arc::default();
    let state = AdminState {
        metrics: handle,
        ready: {
            let trackers = Arc::clone(&trackers);
            Arc::new(move || match trackers.get() {
                Some(t) if t.joined() => Ok(()),
                Some(_) => Err("the consumer has not joined its group yet".to_owned()),
                None => Err("starting".to_owned()),
            })
        },
    };
    let current = Arc::new(cfg.clone());
    let api = admin::Api {
        destinations: Some({
            let statuses = Arc::clone(&statuses);
            Arc::new(move || {
                statuses.get().map_or_else(Vec::new, |list| {
                    list.iter()
                        .map(|(name, r, parked)| DestinationStatus {
                            name: name.clone(),
                            status: r.status(),
                            parked: parked.is_parked(),
                        })
                        .collect()
                })
            })
        }),
        syslog_test: Some({
            let current = Arc::clone(&current);
            admin::syslog_tester(move |name| current.destination(name).cloned())
        }),
        compliance: Some({
            let c = Arc::clone(&compliance);
            Arc::new(move || Some(c.report()))
        }),
        tickets: tickets.as_ref().map(|router| {
            Arc::new(TicketService {
                router: Arc::clone(router),
                compliance: Arc::clone(&compliance),
            }) as Arc<dyn TicketApi>
        }),
        ..admin::Api::from_config(&cfg.admin)
    };
    let admin_stop = tokio_util::sync::CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve_api(listener, state, api, admin_stop.clone()));
    tracing::info!(listen = %cfg.admin.listen, "Admin listener up.");

    let opts = RunOptions {
        shutdown,
        on_start: Some(Box::new(move |info: StartInfo| {
            let _ = trackers.set(info.trackers);
            let _ = statuses.set(info.destinations);
        })),
        compliance: Some(compliance),
        tickets: tickets.clone(),
    };
    let result = pipeline::run(cfg, opts).await;
    ticket_stop.cancel();
    if let Some(router) = tickets.and_then(|t| Arc::try_unwrap(t).ok()) {
        let _ = tokio::time::timeout(Duration::from_secs(5), router.join()).await;
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    result
}
