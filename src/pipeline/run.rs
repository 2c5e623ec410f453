//! The service loop: consume, hand each message to the pipeline, stop cleanly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use super::{DeadLetter, Input, Pipeline, TopicOptions};
use crate::ack::PartitionTracker;
use crate::config::Config;
use crate::event::LogType;
use crate::route::Router;
use crate::sink::{self, SinkSpec};
use crate::source::{self, Trackers};
use crate::throttle::Throttle;

/// What `run` needs besides the config.
#[derive(Default)]
pub struct RunOptions {
    /// Cancelled on SIGTERM/SIGINT (or by a test): stop fetching, drain, commit, return.
    pub shutdown: CancellationToken,
    /// Called once the consumer and destinations exist, so the admin listener can report them.
    pub on_start: Option<Box<dyn FnOnce(StartInfo) + Send>>,
    /// The compliance mapping, looked up per event (`None`: no controls anywhere).
    pub compliance: Option<Arc<crate::compliance::Compliance>>,
    /// The ticket systems (`None`: no `[[ticket]]`).
    pub tickets: Option<Arc<crate::ticket::TicketRouter>>,
}

/// Handles the admin listener reads for `/readyz` and `/api/destinations`.
#[derive(Clone)]
pub struct StartInfo {
    /// The partition trackers (joined = has an assignment).
    pub trackers: Arc<Trackers>,
    /// Each destination's status, in config order (for `/api/destinations`).
    pub destinations: Vec<(String, crate::sink::StatusReader)>,
}

/// Runs the forwarder until `opts.shutdown` is cancelled, then drains within
/// `shutdown_grace_s`, commits and returns.
///
/// # Errors
/// When the Kafka clients cannot be created or subscribed.
pub async fn run(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    let k = &config.kafka;
    let f = &config.forwarder;
    let producer = source::build_producer(&k.brokers, &k.properties)?;
    let dead_letter = DeadLetter::new(producer, &k.dead_letter_topic);

    let router = Router::new(&config.syslog).context("compiling destination filters")?;
    let destinations = config
        .syslog
        .iter()
        .map(|d| {
            let spec = SinkSpec {
                name: d.name.clone(),
                protocol: d.render.protocol,
                address: d.address.clone(),
                queue_events: f.queue_events,
                batch_max_events: f.batch_max_events,
                batch_max_bytes: f.batch_max_bytes,
                batch_linger: Duration::from_millis(f.batch_linger_ms),
                connect_timeout: Duration::from_secs(5),
                tls: d.tls.clone().map(sink::TlsSpec::new),
            };
            (d.render.clone(), sink::spawn(spec))
        })
        .collect();
    let topics = TopicOptions {
        bound: k
            .topic_log_types
            .iter()
            .filter_map(|(t, l)| LogType::from_name(l).map(|l| (t.clone(), l)))
            .collect(),
        max_event_bytes: k.max_event_bytes,
    };
    let mut pipeline = Pipeline::new(router, destinations, dead_letter, topics);
    pipeline.set_compliance(opts.compliance.clone());
    pipeline.set_tickets(opts.tickets.clone());

    let client_config =
        source::consumer_config(&k.brokers, &k.group_id, f.commit_interval_ms, &k.properties);
    let src = source::build_consumer(&client_config, &k.topics)?;
    if let Some(cb) = opts.on_start {
        let destinations = pipeline
            .destinations()
            .iter()
            .map(|d| (d.name.clone(), d.sink.status_reader()))
            .collect();
        cb(StartInfo { trackers: Arc::clone(&src.trackers), destinations });
    }
    tracing::info!(
        brokers = %k.brokers, group = %k.group_id, topics = ?k.topics,
        destinations = pipeline.destinations().len(), renderers = pipeline.renderer_count(),
        "Forwarder running."
    );

    let throttle = Throttle::new(Duration::from_secs(60));
    let mut cache = TrackerCache::default();
    loop {
        let msg = tokio::select! {
            biased;
            _ = opts.shutdown.cancelled() => break,
            msg = src.consumer.recv() => msg,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                if throttle.allow("recv").is_some() {
                    tracing::warn!(error = %e, "Kafka consume error.");
                }
                continue;
            }
        };
        let tracker = cache.get(&src.trackers, msg.topic(), msg.partition());
        let input = Input {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key(),
            payload: msg.payload(),
            timestamp_ms: msg.timestamp().to_millis(),
        };
        // A destination that stays full must not keep us from stopping: the event in hand
        // stays uncommitted and is redelivered.
        tokio::select! {
            biased;
            _ = opts.shutdown.cancelled() => break,
            _ = pipeline.handle(input, &tracker) => {}
        }
    }

    let grace = Duration::from_secs(f.shutdown_grace_s);
    tracing::info!(grace_s = f.shutdown_grace_s, "Stopping: draining destinations.");
    pipeline.close(grace).await;
    let consumer = Arc::clone(&src.consumer);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            if !source::is_no_offset_error(&e) {
                tracing::warn!(error = %e, "Final commit failed; uncommitted events will be redelivered.");
            }
        }
        consumer.unsubscribe();
    })
    .await
    .context("final commit task")?;
    tracing::info!("Stopped.");
    Ok(())
}

/// The last trackers used, re-fetched when the assignment changes (no lock per message).
#[derive(Default)]
struct TrackerCache {
    generation: u64,
    entries: Vec<Arc<PartitionTracker>>,
}

impl TrackerCache {
    fn get(&mut self, trackers: &Trackers, topic: &str, partition: i32) -> Arc<PartitionTracker> {
        let gen = trackers.generation();
        if gen != self.generation {
            self.entries.clear();
            self.generation = gen;
        }
        if let Some(t) = self.entries.iter().find(|t| t.partition() == partition && t.topic() == topic) {
            return Arc::clone(t);
        }
        let t = trackers.get(topic, partition);
        self.entries.push(Arc::clone(&t));
        t
    }
}
