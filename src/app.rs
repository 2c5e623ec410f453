//! The running service assembled: compliance, tickets, the pipeline and the admin API, and its
//! hot reload.
//!
//! `run` (the CLI) calls [`serve`]; tests call it with their own shutdown token.
//!
//! A reload (SIGHUP or `POST /api/reload`) re-reads the config file and the compliance mapping
//! and checks them exactly as at start. An invalid file is refused with the same errors and the
//! running configuration stays. A valid one replaces the pipeline generation: the running one
//! stops fetching, drains its destinations within `shutdown_grace_s` and commits (whatever it
//! could not finish stays uncommitted and is delivered by the next generation: nothing is lost),
//! then the new one starts with the new destinations and ticket systems. The admin listener,
//! the metrics and the compliance counts carry on across generations.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState, BoxFuture, CallError, DestinationStatus, TicketApi};
use crate::compliance::Compliance;
use crate::config::Config;
use crate::event::{decode, DecodeOptions};
use crate::metrics as m;
use crate::pipeline::{self, ParkFlag, RunOptions, StartInfo};
use crate::sink::StatusReader;
use crate::source::Trackers;
use crate::ticket::{History, SinkOptions, TicketError, TicketRouter};

/// What a reload answers: a summary, or every error of the refused file.
type ReloadReply = Result<Value, Vec<String>>;

/// A value the admin API reads while generations come and go.
type Shared<T> = Arc<RwLock<T>>;

fn read<T: Clone>(s: &Shared<T>) -> T {
    s.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(s: &Shared<T>, v: T) {
    *s.write().unwrap_or_else(|p| p.into_inner()) = v;
}

/// The ticket systems as the admin API sees them (the current generation's).
struct TicketService {
    router: Shared<Option<Arc<TicketRouter>>>,
    compliance: Shared<Arc<Compliance>>,
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

impl TicketService {
    fn router(&self) -> Result<Arc<TicketRouter>, CallError> {
        read(&self.router)
            .ok_or_else(|| CallError::NotFound("no [[ticket]] is configured".to_owned()))
    }
}

impl TicketApi for TicketService {
    fn issue(&self, ticket: String, event: Value) -> BoxFuture<'_, Result<Value, CallError>> {
        Box::pin(async move {
            let router = self.router()?;
            // The controls of a manual ticket come from the same mapping (not counted as a hit).
            let bytes = serde_json::to_vec(&event).unwrap_or_default();
            let compliance = read(&self.compliance);
            let controls: Vec<(String, String)> = decode(&bytes, None, &DecodeOptions::default())
                .ok()
                .and_then(|ev| {
                    compliance.peek(&ev).map(|c| {
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
            let created = router
                .issue(&ticket, &event, &pairs)
                .await
                .map_err(call_error)?;
            Ok(serde_json::to_value(created).unwrap_or(Value::Null))
        })
    }

    fn test(&self, ticket: String) -> BoxFuture<'_, Result<Value, CallError>> {
        Box::pin(async move {
            let created = self.router()?.test(&ticket).await.map_err(call_error)?;
            Ok(serde_json::to_value(created).unwrap_or(Value::Null))
        })
    }

    fn history(&self, limit: usize) -> BoxFuture<'_, Result<Value, CallError>> {
        Box::pin(async move {
            let records = self.router()?.history().list(limit);
            Ok(json!({ "tickets": records }))
        })
    }
}

/// The compliance mapping a config names.
fn load_mapping(cfg: &Config) -> Result<Compliance, Vec<String>> {
    Compliance::load(&cfg.compliance.mapping_file, cfg.compliance.mode).map_err(|e| e.errors())
}

/// Re-reads and checks the config file (and its mapping) as at start.
fn prepare_reload(current: &Config) -> Result<(Config, Compliance), Vec<String>> {
    let mut new = current.reload().map_err(|e| e.errors().to_vec())?;
    if new.kafka.is_embedded() {
        // The demo's in-process Kafka is the one already running.
        new.kafka.brokers.clone_from(&current.kafka.brokers);
    }
    let mapping = load_mapping(&new)?;
    Ok((new, mapping))
}

/// Starts the ticket systems of a generation (the history is shared by all generations).
async fn start_tickets(
    cfg: &Config,
    history: &mut Option<Arc<History>>,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Arc<TicketRouter>>> {
    if cfg.ticket.is_empty() {
        return Ok(None);
    }
    let history = match history {
        Some(h) => Arc::clone(h),
        None => {
            let (brokers, props, topic) = (
                cfg.kafka.brokers.clone(),
                cfg.kafka.properties.clone(),
                cfg.kafka.ticket_history_topic.clone(),
            );
            let h = tokio::task::spawn_blocking(move || {
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
            Arc::clone(history.insert(Arc::new(h)))
        }
    };
    let router = TicketRouter::start(&cfg.ticket, history, SinkOptions::default(), stop.clone())
        .context("starting the ticket systems")?;
    Ok(Some(Arc::new(router)))
}

async fn stop_tickets(router: Option<Arc<TicketRouter>>, stop: &CancellationToken) {
    stop.cancel();
    if let Some(router) = router.and_then(|t| Arc::try_unwrap(t).ok()) {
        let _ = tokio::time::timeout(Duration::from_secs(5), router.join()).await;
    }
}

/// Runs the pipeline, the ticket systems and the admin listener until `shutdown` is cancelled,
/// then drains within `shutdown_grace_s`. SIGHUP and `POST /api/reload` reload the config.
///
/// # Errors
/// When the admin address cannot be bound, the metrics recorder cannot be installed, the
/// compliance mapping or a ticket system cannot be loaded, or the Kafka clients cannot be
/// created.
pub async fn serve(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handle = crate::metrics::install()?;
    let listener = admin::bind(&cfg.admin.listen).await?;
    let mapping = load_mapping(&cfg)
        .map_err(|e| anyhow::anyhow!(e.join("\n")))
        .context("loading the compliance mapping")?;

    let current: Shared<Arc<Config>> = Arc::new(RwLock::new(Arc::new(cfg.clone())));
    let compliance: Shared<Arc<Compliance>> = Arc::new(RwLock::new(Arc::new(mapping)));
    let tickets: Shared<Option<Arc<TicketRouter>>> = Arc::default();
    let trackers: Shared<Option<Arc<Trackers>>> = Arc::default();
    let statuses: Shared<Vec<(String, StatusReader, ParkFlag)>> = Arc::default();
    let (reload_tx, mut reload_rx) = mpsc::channel::<oneshot::Sender<ReloadReply>>(4);

    let state = AdminState {
        before_render: Some({
            let compliance = Arc::clone(&compliance);
            Arc::new(move || read(&compliance).publish_metrics())
        }),
        extra_metrics: Some({
            let trackers = Arc::clone(&trackers);
            Arc::new(move |out: &mut String| {
                if let Some(t) = read(&trackers) {
                    t.render_lag(out);
                }
            })
        }),
        metrics: handle,
        ready: {
            let (trackers, statuses) = (Arc::clone(&trackers), Arc::clone(&statuses));
            Arc::new(move || {
                match read(&trackers) {
                    Some(t) if t.joined() => {}
                    Some(_) => return Err("the consumer has not joined its group yet".to_owned()),
                    None => return Err("starting".to_owned()),
                }
                // Every destination task must be running (connected or not: a SIEM that is
                // down is parked, which is no reason to take the replica out of service).
                let stopped: Vec<String> = read(&statuses)
                    .iter()
                    .filter(|(_, r, _)| r.status().state == crate::sink::SinkState::Closed)
                    .map(|(name, _, _)| name.clone())
                    .collect();
                if stopped.is_empty() {
                    Ok(())
                } else {
                    Err(format!("destination tasks stopped: {}", stopped.join(", ")))
                }
            })
        },
    };
    let api = admin::Api {
        destinations: Some({
            let statuses = Arc::clone(&statuses);
            Arc::new(move || {
                read(&statuses)
                    .iter()
                    .map(|(name, r, parked)| DestinationStatus {
                        name: name.clone(),
                        status: r.status(),
                        parked: parked.is_parked(),
                    })
                    .collect()
            })
        }),
        syslog_test: Some({
            let current = Arc::clone(&current);
            admin::syslog_tester(move |name| read(&current).destination(name).cloned())
        }),
        compliance: Some({
            let c = Arc::clone(&compliance);
            Arc::new(move || Some(read(&c).report()))
        }),
        reload: Some({
            let tx = reload_tx.clone();
            Arc::new(move || {
                let tx = tx.clone();
                Box::pin(async move {
                    let (reply, answer) = oneshot::channel();
                    tx.send(reply)
                        .await
                        .map_err(|_| vec!["the service is stopping".to_owned()])?;
                    answer
                        .await
                        .map_err(|_| vec!["the service is stopping".to_owned()])?
                })
            })
        }),
        tickets: Some(Arc::new(TicketService {
            router: Arc::clone(&tickets),
            compliance: Arc::clone(&compliance),
        })),
        ..admin::Api::from_config(&cfg.admin)
    };
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve_api(listener, state, api, admin_stop.clone()));
    tracing::info!(listen = %cfg.admin.listen, "Admin listener up.");
    let hangup = tokio::spawn(reload_on_sighup(reload_tx));

    let mut cfg = cfg;
    let mut history: Option<Arc<History>> = None;
    let result = loop {
        let ticket_stop = CancellationToken::new();
        let router = match start_tickets(&cfg, &mut history, &ticket_stop).await {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        write(&tickets, router.clone());
        let gen_stop = CancellationToken::new();
        let opts = RunOptions {
            shutdown: gen_stop.clone(),
            on_start: Some(Box::new({
                let (trackers, statuses) = (Arc::clone(&trackers), Arc::clone(&statuses));
                move |info: StartInfo| {
                    write(&trackers, Some(info.trackers));
                    write(&statuses, info.destinations);
                }
            })),
            compliance: Some(read(&compliance)),
            tickets: router.clone(),
        };
        let run = pipeline::run(cfg.clone(), opts);
        tokio::pin!(run);
        let next = loop {
            tokio::select! {
                r = &mut run => break (r, None),
                () = shutdown.cancelled() => {
                    gen_stop.cancel();
                    break ((&mut run).await, None);
                }
                Some(reply) = reload_rx.recv() => match prepare_reload(&cfg) {
                    Err(errors) => {
                        metrics::counter!(m::CONFIG_RELOADS_TOTAL, "outcome" => "error").increment(1);
                        tracing::warn!(errors = ?errors, "Reload refused; the running configuration stays.");
                        let _ = reply.send(Err(errors));
                    }
                    Ok(prepared) => {
                        tracing::info!("Reloading: draining the running pipeline.");
                        gen_stop.cancel();
                        break ((&mut run).await, Some((prepared, reply)));
                    }
                },
            }
        };
        stop_tickets(router, &ticket_stop).await;
        write(&tickets, None);
        write(&trackers, None);
        match next {
            (r, None) => break r,
            (Err(e), Some((_, reply))) => {
                let _ = reply.send(Err(vec![format!("the running pipeline failed: {e:#}")]));
                break Err(e);
            }
            (Ok(()), Some(((new, mut mapping), reply))) => {
                let old: Arc<Compliance> = read(&compliance);
                // A control the new file drops keeps its series at the old total.
                old.publish_metrics();
                mapping.carry_counts_from(&old);
                write(&compliance, Arc::new(mapping));
                metrics::counter!(m::CONFIG_RELOADS_TOTAL, "outcome" => "ok").increment(1);
                let names: Vec<&str> = new.syslog.iter().map(|d| d.name.as_str()).collect();
                tracing::info!(destinations = ?names, "Configuration reloaded.");
                let _ = reply.send(Ok(json!({
                    "reloaded": true,
                    "destinations": names,
                    "tickets": new.ticket.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
                })));
                write(&current, Arc::new(new.clone()));
                cfg = new;
            }
        }
    };
    hangup.abort();
    admin_stop.cancel();
    let _ = admin_task.await;
    result
}

/// SIGHUP asks for a reload (and no longer ends the process, the default action).
async fn reload_on_sighup(tx: mpsc::Sender<oneshot::Sender<ReloadReply>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let (reply, answer) = oneshot::channel();
            if tx.send(reply).await.is_err() {
                return;
            }
            match answer.await {
                Ok(Ok(v)) => tracing::info!(result = %v, "SIGHUP: configuration reloaded."),
                Ok(Err(errors)) => tracing::warn!(?errors, "SIGHUP: reload refused."),
                Err(_) => return,
            }
        }
    }
    #[cfg(not(unix))]
    drop(tx);
}
