//! The service loop: consume, hand each message to the pipeline, stop cleanly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer};
use std::collections::VecDeque;
use std::future::Future as _;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use super::park::{self, Parker};
use super::retry::{self, RetryFeed, RetryTarget};
use super::{DeadLetter, Headers, Input, Pipeline, TopicOptions};
use crate::ack::PartitionTracker;
use crate::config::Config;
use crate::event::LogType;
use crate::route::Router;
use crate::sink::{self, SinkSpec};
use crate::source::{self, pause, KafkaSource, Trackers};
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
    pub destinations: Vec<(String, crate::sink::StatusReader, super::ParkFlag)>,
}

/// Runs the forwarder until `opts.shutdown` is cancelled, then drains within
/// `shutdown_grace_s`, commits and returns.
///
/// # Errors
/// When the Kafka clients cannot be created or subscribed.
pub async fn run(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    let k = &config.kafka;
    let f = &config.forwarder;
    // One producer for dead letters and parked events: each librdkafka producer brings its own
    // threads.
    let producer = source::build_producer(&k.brokers, &k.properties)?;
    let dead_letter = DeadLetter::new(producer.clone(), &k.dead_letter_topic);

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
        // Tickets may carry the raw log and filter on it: kept whenever there are any.
        raw_log: config.syslog.iter().any(|d| d.render.include_raw_log)
            || router.reads(crate::event::Field::LogOrigin)
            || opts.tickets.is_some(),
    };
    let mut pipeline = Pipeline::new(router, destinations, dead_letter.clone(), topics.clone());
    pipeline.set_compliance(opts.compliance.clone());
    pipeline.set_tickets(opts.tickets.clone());

    // Parking (delivery.md §3).
    let retry_topics: Vec<String> = config
        .syslog
        .iter()
        .map(|d| park::retry_topic_name(&k.retry_topic, &d.name))
        .collect();
    // In the background: a broker without CreateTopics (the mock cluster) must not hold
    // startup; until they exist, parked events wait in the producer's retries.
    tokio::spawn({
        let (brokers, props, names) = (
            k.brokers.clone(),
            k.properties.clone(),
            retry_topics.clone(),
        );
        async move { park::ensure_topics(&brokers, &props, &names).await }
    });
    // At least 8192 parked events in flight to Kafka (about 8 MB of payload copies): fewer
    // would make parking, and so the pipeline, wait on produce round trips.
    let parker = Parker::new(producer, f.queue_events.max(8192));
    let flags = pipeline.enable_parking(
        parker.clone(),
        &k.retry_topic,
        Duration::from_millis(f.park_after_ms),
    );
    let parked_flags = flags.clone();
    let targets = config
        .syslog
        .iter()
        .zip(pipeline.destinations())
        .zip(flags)
        .zip(&retry_topics)
        .map(|(((c, d), flag), topic)| {
            RetryTarget::new(
                &d.name,
                topic.clone(),
                c.render.clone(),
                d.sender.clone(),
                flag,
            )
        })
        .collect();
    let mut retry_config = source::consumer_config(
        &k.brokers,
        &format!("{}.retry", k.group_id),
        f.commit_interval_ms,
        &k.properties,
    );
    // Where the brokers refused CreateTopics, subscribing creates the retry topics (if the
    // brokers allow auto-creation) instead of waiting for the first parked event.
    retry_config.set("allow.auto.create.topics", "true");
    let retry_src = source::build_consumer(&retry_config, &retry_topics)?;
    retry_src
        .trackers
        .set_revoke_drain(Duration::from_secs(f.shutdown_grace_s));
    let retry_stop = CancellationToken::new();
    let feed = RetryFeed {
        targets,
        parker: parker.clone(),
        dead_letter,
        topics,
    };
    let retry_task = tokio::spawn(retry::run(retry_src, feed, retry_stop.clone()));

    let client_config =
        source::consumer_config(&k.brokers, &k.group_id, f.commit_interval_ms, &k.properties);
    let src = source::build_consumer(&client_config, &k.topics)?;
    src.trackers
        .set_revoke_drain(Duration::from_secs(f.shutdown_grace_s));
    if let Some(cb) = opts.on_start {
        let destinations = pipeline
            .destinations()
            .iter()
            .zip(&parked_flags)
            .map(|(d, flag)| (d.name.clone(), d.sink.status_reader(), flag.clone()))
            .collect();
        cb(StartInfo {
            trackers: Arc::clone(&src.trackers),
            destinations,
        });
    }
    tracing::info!(
        brokers = %k.brokers, group = %k.group_id, topics = ?k.topics,
        destinations = pipeline.destinations().len(), renderers = pipeline.renderer_count(),
        "Forwarder running."
    );

    let throttle = Throttle::new(Duration::from_secs(60));
    let mut cache = TrackerCache::default();
    // Messages that arrived while the consumer was paused; handled first, in order.
    let mut held: VecDeque<OwnedMessage> = VecDeque::new();
    loop {
        if let Some(m) = held.pop_front() {
            crate::malloc::release_drained(&mut held);
            let headers = m.headers().map_or(Headers::None, Headers::Owned);
            let input = input_of(&m, headers);
            let tracker = cache.get(&src.trackers, m.topic(), m.partition());
            if handle_polling(
                &mut pipeline,
                input,
                &tracker,
                &src,
                &opts.shutdown,
                &mut held,
            )
            .await
            {
                break;
            }
            continue;
        }
        let recv = src.consumer.recv();
        tokio::pin!(recv);
        // When nothing is ready the destinations stop lingering: what this burst sent goes out.
        let next = std::future::poll_fn(|cx| {
            let polled = recv.as_mut().poll(cx);
            if polled.is_pending() {
                pipeline.input_paused();
            }
            polled
        });
        let msg = tokio::select! {
            biased;
            _ = opts.shutdown.cancelled() => break,
            msg = next => msg,
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
        let input = input_of(&msg, Headers::Borrowed(&msg));
        if handle_polling(
            &mut pipeline,
            input,
            &tracker,
            &src,
            &opts.shutdown,
            &mut held,
        )
        .await
        {
            break;
        }
    }
    drop(held);

    let grace = Duration::from_secs(f.shutdown_grace_s);
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(
        grace_s = f.shutdown_grace_s,
        "Stopping: draining destinations."
    );
    retry_stop.cancel();
    let retry_src = retry_task.await.context("retry consumer task")?;
    pipeline.close(grace).await;
    // Parks started before the stop finish within what is left of the grace period.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    parker.close(left.max(Duration::from_secs(1))).await;
    // The destinations are closed: what is unfinished now stays so; no waiting on revoke.
    src.trackers.set_revoke_drain(Duration::ZERO);
    retry::finish(retry_src).await;
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

/// Blocked this long on one event (no room, no parking), the consumer pauses and keeps polling.
const PAUSE_AFTER: Duration = Duration::from_secs(1);
/// At most this many messages fetched before the pause took effect are kept while paused.
const HELD_MAX: usize = 10_000;

fn input_of<'a, M: Message>(m: &'a M, headers: Headers<'a>) -> Input<'a> {
    Input {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        payload: m.payload(),
        timestamp_ms: m.timestamp().to_millis(),
        headers,
    }
}

/// Hands one message to the pipeline. While that waits (backpressure) for longer than
/// [`PAUSE_AFTER`], the consumer's partitions are paused and it keeps being polled; messages
/// it still returns are kept in `held`. Returns `true` when shutdown interrupted the wait: the
/// event in hand stays uncommitted and is redelivered.
async fn handle_polling(
    pipeline: &mut Pipeline,
    input: Input<'_>,
    tracker: &Arc<PartitionTracker>,
    src: &KafkaSource,
    shutdown: &CancellationToken,
    held: &mut VecDeque<OwnedMessage>,
) -> bool {
    let handled = pipeline.handle(input, tracker);
    tokio::pin!(handled);
    // Most events are handed over without waiting: no timer or select for them (creating the
    // pause timer read the clock once per event).
    let ready =
        std::future::poll_fn(|cx| std::task::Poll::Ready(handled.as_mut().poll(cx).is_ready()))
            .await;
    if ready {
        return false;
    }
    let mut paused = None;
    let stopped = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break true,
            _ = &mut handled => break false,
            () = tokio::time::sleep(PAUSE_AFTER), if paused.is_none() => {
                paused = Some(pause::pause_assigned(&src.consumer));
            }
            m = src.consumer.recv(), if paused.is_some() && held.len() < HELD_MAX => {
                if let Ok(m) = m {
                    held.push_back(m.detach());
                }
            }
        }
    };
    if let Some(Some(p)) = paused {
        tracing::info!(
            partitions = p.count(),
            held = held.len(),
            "Destination has room again: consumer resumed."
        );
        p.resume(&src.consumer);
    }
    stopped
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
        if let Some(t) = self
            .entries
            .iter()
            .find(|t| t.partition() == partition && t.topic() == topic)
        {
            return Arc::clone(t);
        }
        let t = trackers.get(topic, partition);
        self.entries.push(Arc::clone(&t));
        t
    }
}
