//! The service loop: consume the messages that are ready in bursts, decode each burst, hand its
//! events to the pipeline one by one in offset order, stop cleanly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use super::decode_burst::{recycle, recycle_inputs, BURST_MAX};
use super::park::{self, Parker};
use super::retry::{self, RetryFeed, RetryTarget};
use super::{DeadLetter, Decoded, Headers, Input, Pipeline, TopicOptions};
use crate::ack::PartitionTracker;
use crate::config::Config;
use crate::event::LogType;
use crate::route::Router;
use crate::sink::{self, SinkSpec};
use crate::source::{self, pause, BatchConsumer, Msg, Trackers};
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
    let trackers = Arc::new(Trackers::default());
    trackers.set_revoke_drain(Duration::from_secs(f.shutdown_grace_s));
    let consumer = BatchConsumer::subscribe(&client_config, &k.topics, Arc::clone(&trackers))?;
    if let Some(cb) = opts.on_start {
        let destinations = pipeline
            .destinations()
            .iter()
            .zip(&parked_flags)
            .map(|(d, flag)| (d.name.clone(), d.sink.status_reader(), flag.clone()))
            .collect();
        cb(StartInfo {
            trackers: Arc::clone(&trackers),
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
    let mut held: VecDeque<Held<'_>> = VecDeque::new();
    // Messages of partitions revoked since they were taken, left to their next owner (logged
    // once no held message is left).
    let mut revoked_skipped = 0usize;
    let mut batches = Batches {
        consumer: &consumer,
        spare: Vec::with_capacity(BURST_MAX),
    };
    let mut since_check = SHUTDOWN_CHECK_EVERY;
    let mut burst: Vec<(Msg<'_>, Arc<PartitionTracker>)> = Vec::with_capacity(BURST_MAX);
    let mut inputs_spare: Vec<Input<'_>> = Vec::with_capacity(BURST_MAX);
    let mut decoded_spare: Vec<Decoded<'_>> = Vec::with_capacity(BURST_MAX);
    loop {
        if let Some((m, then)) = held.pop_front() {
            crate::malloc::release_drained(&mut held);
            // Revoked (perhaps assigned again) while held: whoever reads the partition next
            // starts at its committed offset, before this message; handling it here too would
            // send it twice.
            let tracker = trackers.still(&then);
            revoked_skipped += usize::from(tracker.is_none());
            log_revoked_skipped(&mut revoked_skipped, &held);
            let Some(tracker) = tracker else {
                continue;
            };
            let input = input_of(&m, &tracker, Headers::Borrowed(&m));
            let handled = pipeline.handle(input, &tracker);
            if handle_polling(handled, &consumer, &opts.shutdown, &mut held).await {
                break;
            }
            continue;
        }
        // The messages ready now (up to a burst), taken from librdkafka in one call. A
        // rebalance served inside that call shows as a new generation.
        let generation = trackers.generation();
        let Some(mut batch) = next_or_stop(&mut batches, &opts.shutdown, &mut since_check, || {
            // When nothing is ready the destinations stop lingering: what this burst sent
            // goes out.
            pipeline.input_paused()
        })
        .await
        else {
            break;
        };
        // Each with its partition's tracker now; a partition revoked inside the call has
        // none, and its messages belong to its next owner.
        for m in batch.drain(..) {
            if let Some(m) = usable(m, &throttle) {
                match cache.get(&trackers, m.topic(), m.partition()) {
                    Some(tracker) => burst.push((m, tracker)),
                    None => revoked_skipped += 1,
                }
            }
        }
        batches.spare = batch;
        let mut inputs = recycle_inputs(inputs_spare);
        inputs.extend(
            burst
                .iter()
                .map(|(m, tracker)| input_of(m, tracker, Headers::Borrowed(m))),
        );
        let mut decoded = recycle(decoded_spare);
        pipeline.decode_burst(&inputs, &mut decoded);
        let mut stopped = false;
        for ((input, ev), (_, tracker)) in inputs.drain(..).zip(decoded.iter_mut()).zip(&burst) {
            // The partition may have been revoked since its message was taken, while a paused
            // consumer is polled (`handle_polling`), perhaps assigned again: its messages
            // belong to whoever reads it next, from the committed offset. Handling one here
            // would send it twice.
            if !trackers.kept_since(generation, tracker) {
                revoked_skipped += 1;
                continue;
            }
            let handled = pipeline.handle_decoded(input, ev, tracker);
            if handle_polling(handled, &consumer, &opts.shutdown, &mut held).await {
                stopped = true;
                break;
            }
        }
        // The burst's frames go to their destinations together (also when stopping: they
        // are delivered within the grace period).
        pipeline.flush();
        log_revoked_skipped(&mut revoked_skipped, &held);
        decoded_spare = recycle(decoded);
        inputs_spare = recycle_inputs(inputs);
        burst.clear();
        if stopped {
            break;
        }
    }
    // Everything that borrows the consumer, before it closes.
    drop((held, burst, batches, inputs_spare, decoded_spare));

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
    trackers.set_revoke_drain(Duration::ZERO);
    retry::finish(retry_src).await;
    src_close(consumer).await?;
    tracing::info!("Stopped.");
    Ok(())
}

/// The next item (a batch of messages), or `None` once `shutdown` is cancelled (or the stream
/// ends, which a consumer's never does). An item that is ready now is taken without a select,
/// whose shutdown future locks the token's waiters on every poll: the token is looked at once
/// every [`SHUTDOWN_CHECK_EVERY`] items instead (`since_check` counts them), and whenever the
/// queue is empty, where `on_empty` is called before waiting. While it waits, the thread
/// collects its heap when the idle collector asks (`malloc.rs`).
async fn next_or_stop<S: Stream + Unpin>(
    stream: &mut S,
    shutdown: &CancellationToken,
    since_check: &mut u32,
    mut on_empty: impl FnMut(),
) -> Option<S::Item> {
    let ready = poll_now(stream).await;
    match ready {
        Poll::Ready(m) if *since_check < SHUTDOWN_CHECK_EVERY => {
            *since_check += 1;
            return m;
        }
        Poll::Ready(_) => {
            // A backlog keeps messages ready for hours: without a turn for the scheduler,
            // what shares this task (the binary's select on SIGTERM and on reloads) is never
            // polled.
            tokio::task::yield_now().await;
            *since_check = 0;
        }
        Poll::Pending => *since_check = 0,
    }
    if shutdown.is_cancelled() {
        return None;
    }
    if let Poll::Ready(m) = ready {
        return m;
    }
    let next = std::future::poll_fn(|cx| {
        let polled = Pin::new(&mut *stream).poll_next(cx);
        if polled.is_pending() {
            on_empty();
        }
        polled
    });
    tokio::pin!(next);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            // The process went idle: this thread's heap gives back what it holds.
            () = crate::malloc::collect_asked() => {
                crate::malloc::collect_if_asked();
            }
            m = &mut next => return m,
        }
    }
}

/// Blocked this long on one event (no room, no parking), the consumer pauses and keeps polling.
const PAUSE_AFTER: Duration = Duration::from_secs(1);
/// Batches (of up to [`BURST_MAX`] messages) taken straight from a non-empty queue between two
/// looks at the shutdown token, each with a turn for the scheduler. A turn costs about 1 µs in
/// a spawned task (measured), so a few hundred messages make it free; the stop waits at most
/// 8 × 64 = 512 messages (under 1 ms).
const SHUTDOWN_CHECK_EVERY: u32 = 8;
/// At most this many messages fetched before the pause took effect are kept while paused.
const HELD_MAX: usize = 10_000;

/// A message taken while the consumer was paused, with its partition's tracker at that moment.
type Held<'c> = (Msg<'c>, Arc<PartitionTracker>);

/// Logs the messages of revoked partitions skipped so far, once no held message is left (one
/// line per rebalance rather than one per message), and starts counting again.
fn log_revoked_skipped(skipped: &mut usize, held: &VecDeque<Held<'_>>) {
    if *skipped > 0 && held.is_empty() {
        tracing::info!(
            messages = std::mem::take(skipped),
            "Messages of revoked partitions left to their new owner."
        );
    }
}

/// The consumer's ready messages as a stream of batches of up to [`BURST_MAX`], each taken
/// from librdkafka in one call. A batch handed out comes back as `spare` (its allocation).
struct Batches<'c> {
    consumer: &'c BatchConsumer,
    spare: Vec<Msg<'c>>,
}

impl<'c> Stream for Batches<'c> {
    type Item = Vec<Msg<'c>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut batch = std::mem::take(&mut this.spare);
        batch.clear();
        match this.consumer.poll_ready(cx, &mut batch, BURST_MAX) {
            Poll::Ready(_) => Poll::Ready(Some(batch)),
            Poll::Pending => {
                this.spare = batch;
                Poll::Pending
            }
        }
    }
}

/// One poll of the stream, without waiting: `Pending` when no message is ready now.
async fn poll_now<S: Stream + Unpin>(stream: &mut S) -> Poll<Option<S::Item>> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *stream).poll_next(cx))).await
}

/// The message, or `None` for a consume error (logged, throttled; librdkafka goes on after it).
fn usable<'c>(m: Msg<'c>, throttle: &Throttle) -> Option<Msg<'c>> {
    match m.error() {
        None => Some(m),
        Some(e) => {
            if throttle.allow("recv").is_some() {
                tracing::warn!(error = %e, "Kafka consume error.");
            }
            None
        }
    }
}

/// Leaves the group (committing what is finished, on a blocking thread) and destroys the
/// consumer.
async fn src_close(consumer: Arc<BatchConsumer>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        if let Err(e) = consumer.commit_sync() {
            if !source::is_no_offset_error(&e) {
                tracing::warn!(error = %e, "Final commit failed; uncommitted events will be redelivered.");
            }
        }
        consumer.close();
    })
    .await
    .context("final commit task")
}

/// The pipeline's view of a message. The topic comes from its partition's tracker: rdkafka's
/// `topic()` is a call into librdkafka, a `strlen` and a UTF-8 check, already paid once per
/// message to find that tracker.
fn input_of<'a, M: Message>(
    m: &'a M,
    tracker: &'a PartitionTracker,
    headers: Headers<'a>,
) -> Input<'a> {
    Input {
        topic: tracker.topic(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        payload: m.payload(),
        timestamp_ms: m.timestamp().to_millis(),
        headers,
    }
}

/// Waits for the pipeline to take one message (`handled`, from [`Pipeline::handle`] or
/// [`Pipeline::handle_decoded`]). While that waits (backpressure) for longer than
/// [`PAUSE_AFTER`], the consumer's partitions are paused and it keeps being polled; messages
/// it still returns are kept in `held`. Returns `true` when shutdown interrupted the wait: the
/// event in hand stays uncommitted and is redelivered.
async fn handle_polling<'c>(
    handled: impl std::future::Future<Output = super::Handled>,
    consumer: &'c BatchConsumer,
    shutdown: &CancellationToken,
    held: &mut VecDeque<Held<'c>>,
) -> bool {
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
    let mut taken = Vec::new();
    let throttle = Throttle::new(Duration::from_secs(60));
    let stopped = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break true,
            _ = &mut handled => break false,
            () = tokio::time::sleep(PAUSE_AFTER), if paused.is_none() => {
                paused = Some(pause::pause_assigned(consumer));
            }
            _ = consumer.ready(&mut taken, BURST_MAX), if paused.is_some() && held.len() < HELD_MAX => {
                // A partition revoked meanwhile has no tracker: its next owner reads it.
                for m in taken.drain(..).filter_map(|m| usable(m, &throttle)) {
                    if let Some(t) = consumer.trackers().current(m.topic(), m.partition()) {
                        held.push_back((m, t));
                    }
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
        p.resume(consumer);
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
    /// The partition's tracker, `None` when it is not assigned (revoked).
    fn get(
        &mut self,
        trackers: &Trackers,
        topic: &str,
        partition: i32,
    ) -> Option<Arc<PartitionTracker>> {
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
            return Some(Arc::clone(t));
        }
        let t = trackers.current(topic, partition)?;
        self.entries.push(Arc::clone(&t));
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Context;

    /// Always has a message ready, like a consumer queue during a long backlog.
    struct Backlog(u64);

    impl Stream for Backlog {
        type Item = u64;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<u64>> {
            self.0 += 1;
            Poll::Ready(Some(self.0))
        }
    }

    /// Never has a message.
    struct Empty;

    impl Stream for Empty {
        type Item = u64;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<u64>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn ready_messages_come_in_order_without_a_stop() {
        let (mut s, stop, mut n) = (Backlog(0), CancellationToken::new(), SHUTDOWN_CHECK_EVERY);
        for want in 1..=500 {
            assert_eq!(next_or_stop(&mut s, &stop, &mut n, || {}).await, Some(want));
        }
    }

    #[tokio::test]
    async fn a_stop_during_a_backlog_ends_within_the_check_interval() {
        let (mut s, stop) = (Backlog(0), CancellationToken::new());
        // The loop starts due for a check: a stop before the first message takes none.
        let mut n = SHUTDOWN_CHECK_EVERY;
        stop.cancel();
        assert_eq!(next_or_stop(&mut s, &stop, &mut n, || {}).await, None);

        let (stop, mut n) = (CancellationToken::new(), SHUTDOWN_CHECK_EVERY);
        for _ in 0..100 {
            next_or_stop(&mut s, &stop, &mut n, || {}).await;
        }
        stop.cancel();
        let mut taken = 0;
        while taken <= 10_000 && next_or_stop(&mut s, &stop, &mut n, || {}).await.is_some() {
            taken += 1;
        }
        assert!(taken < 10_000, "the stop is never looked at");
        assert!(
            taken <= SHUTDOWN_CHECK_EVERY,
            "{taken} messages taken after the stop"
        );
    }

    /// In the binary the run shares a task with a select on SIGTERM and on reloads: during a
    /// backlog those must still be polled, so the stop comes from a future beside the loop.
    #[tokio::test]
    async fn a_backlog_lets_the_futures_beside_it_run() {
        let (mut s, stop) = (Backlog(0), CancellationToken::new());
        let (mut n, mut taken) = (SHUTDOWN_CHECK_EVERY, 0u64);
        let consume = async {
            while taken < 1_000_000 && next_or_stop(&mut s, &stop, &mut n, || {}).await.is_some() {
                taken += 1;
            }
        };
        let beside = async {
            tokio::task::yield_now().await;
            stop.cancel();
        };
        tokio::join!(consume, beside);
        // A turn at each look at the stop; the stop is seen at the next.
        let bound = 2 * u64::from(SHUTDOWN_CHECK_EVERY) + 1;
        assert!(
            taken <= bound,
            "{taken} messages before the future beside ran"
        );
    }

    #[tokio::test]
    async fn an_empty_queue_calls_on_empty_and_waits_for_the_stop() {
        let stop = CancellationToken::new();
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            canceller.cancel();
        });
        let (mut empties, mut n) = (0, 0);
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            next_or_stop(&mut Empty, &stop, &mut n, || empties += 1),
        )
        .await
        .expect("the stop ends the wait");
        assert_eq!(got, None);
        assert!(
            empties >= 1,
            "the destinations were not told the input paused"
        );
    }
}
