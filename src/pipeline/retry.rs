//! The retry consumer (delivery.md §3): one per process, in its own consumer group
//! `{group_id}.retry`, reads the retry topics of the destinations that are healthy again
//! (pausing the partitions of those still parked or down), re-renders each parked event with
//! the current config and feeds it to that destination only. Its offsets are stored from the
//! same ack trackers as the main consumer's: a retry-topic offset commits only once the
//! destination acknowledged the frame (or it was parked again, or dead-lettered).
//!
//! Order per destination holds within a parking episode (one partition per retry topic), not
//! across episodes: events that arrive while parked events are fed back interleave with them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use metrics::Counter;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::{Message, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::{now_us, DeadLetter, Origin, ParkFlag, Parker, TopicOptions};
use crate::event::decode;
use crate::metrics as m;
use crate::render::{RenderContext, RenderSettings, Rendered, Renderer};
use crate::sink::{Frame, SendRefused, SinkSender};
use crate::source::{self, KafkaSource};
use crate::throttle::Throttle;

/// One destination as the retry consumer feeds it.
pub(crate) struct RetryTarget {
    pub name: String,
    pub topic: Arc<str>,
    pub renderer: Renderer,
    pub sender: SinkSender,
    pub flag: ParkFlag,
    unparked: Counter,
    parked: Counter,
}

impl RetryTarget {
    pub fn new(
        name: &str,
        topic: String,
        settings: RenderSettings,
        sender: SinkSender,
        flag: ParkFlag,
    ) -> Self {
        let d = || ("destination", name.to_owned());
        RetryTarget {
            name: name.to_owned(),
            topic: topic.into(),
            renderer: Renderer::new(settings),
            sender,
            flag,
            unparked: metrics::counter!(m::EVENTS_UNPARKED_TOTAL, &[d()]),
            parked: metrics::counter!(m::EVENTS_PARKED_TOTAL, &[d()]),
        }
    }

    /// Parked, or its sink down: its retry partitions stay paused.
    fn blocked(&self) -> bool {
        self.flag.refresh(&self.name, &self.sender) || self.sender.is_down()
    }
}

/// What the retry loop needs besides its consumer.
pub(crate) struct RetryFeed {
    pub targets: Vec<RetryTarget>,
    pub parker: Parker,
    pub dead_letter: DeadLetter,
    pub topics: TopicOptions,
}

/// Runs the retry consumer until `stop`; returns it for [`finish`].
pub(crate) async fn run(src: KafkaSource, feed: RetryFeed, stop: CancellationToken) -> KafkaSource {
    let throttle = Throttle::new(Duration::from_secs(60));
    let mut paused: HashSet<(String, i32)> = HashSet::new();
    let mut generation = u64::MAX;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let msg = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = tick.tick() => {
                if src.trackers.generation() != generation {
                    generation = src.trackers.generation();
                    paused.clear();
                }
                update_pauses(&src, &feed.targets, &mut paused);
                continue;
            }
            msg = src.consumer.recv() => msg,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                if throttle.allow("recv").is_some() {
                    tracing::warn!(error = %e, "Retry consumer error.");
                }
                continue;
            }
        };
        let tracker = src.trackers.get(msg.topic(), msg.partition());
        let Some(ack) = tracker.dispatch(msg.offset(), 1).pop() else {
            continue;
        };
        let Some(target) = feed.targets.iter().find(|t| &*t.topic == msg.topic()) else {
            // A retry topic of a destination no longer configured: nothing to feed.
            ack.done();
            continue;
        };
        let payload = msg.payload().unwrap_or_default();
        let header = |name: &str| {
            msg.headers()
                .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let copy_headers = || {
            let mut out = OwnedHeaders::new();
            if let Some(h) = msg.headers() {
                for x in h.iter() {
                    out = out.insert(Header {
                        key: x.key,
                        value: x.value,
                    });
                }
            }
            out
        };
        if target.blocked() {
            // Fetched before the pause took effect: park it again (at the end of its topic).
            feed.parker
                .park_record(
                    &target.topic,
                    payload,
                    msg.key(),
                    copy_headers(),
                    ack,
                    &target.parked,
                )
                .await;
            continue;
        }
        if header(super::park::RENDERED_HEADER).is_some() {
            // Taken back from the sink's queue already rendered: sent as it is.
            let frame = Frame {
                bytes: bytes::Bytes::copy_from_slice(payload),
                ack,
                event_time_ms: msg.timestamp().to_millis(),
            };
            feed_one(
                &feed,
                target,
                frame,
                payload,
                msg.key(),
                copy_headers,
                &stop,
            )
            .await;
            continue;
        }
        let source_topic = header("source_topic").unwrap_or_default();
        let origin_partition = header("source_partition")
            .and_then(|p| p.parse().ok())
            .unwrap_or(-1);
        let origin_offset = header("source_offset")
            .and_then(|p| p.parse().ok())
            .unwrap_or(-1);
        let origin = Origin {
            topic: &source_topic,
            partition: origin_partition,
            offset: origin_offset,
        };
        let opts = feed.topics.for_topic(&source_topic);
        let event = match decode(payload, msg.key(), &opts) {
            Ok(mut ev) => {
                ev.kafka_timestamp_ms = msg.timestamp().to_millis();
                ev
            }
            Err(invalid) => {
                let reason = invalid.reason();
                feed.dead_letter
                    .send(payload, msg.key(), reason, origin, Some(&target.name), ack);
                continue;
            }
        };
        if buf.capacity() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let outcome = target
            .renderer
            .render(&event, &RenderContext { now_us: now_us() }, &mut buf);
        let bytes = buf.split().freeze();
        if outcome == Rendered::Oversize {
            feed.dead_letter.send(
                payload,
                msg.key(),
                "oversize",
                origin,
                Some(&target.name),
                ack,
            );
            continue;
        }
        let frame = Frame {
            bytes,
            ack,
            event_time_ms: msg.timestamp().to_millis(),
        };
        feed_one(
            &feed,
            target,
            frame,
            payload,
            msg.key(),
            copy_headers,
            &stop,
        )
        .await;
    }
    src
}

/// Commits what the retry consumer finished and leaves its group (after the sinks closed,
/// so that their last acknowledgements are in).
pub(crate) async fn finish(src: KafkaSource) {
    src.trackers.set_revoke_drain(Duration::ZERO);
    let consumer = Arc::clone(&src.consumer);
    drop(src);
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            if !source::is_no_offset_error(&e) {
                tracing::warn!(error = %e, "Retry consumer's final commit failed; its events will be read again.");
            }
        }
        consumer.unsubscribe();
    })
    .await;
}

/// Hands one frame to its destination, waiting for room; parks it again if the destination
/// is parked (or the process stops) meanwhile.
async fn feed_one(
    feed: &RetryFeed,
    target: &RetryTarget,
    mut frame: Frame,
    payload: &[u8],
    key: Option<&[u8]>,
    headers: impl Fn() -> OwnedHeaders,
    stop: &CancellationToken,
) {
    loop {
        match target
            .sender
            .send_timeout(frame, Duration::from_millis(200))
            .await
        {
            Ok(()) => {
                target.unparked.increment(1);
                return;
            }
            Err(SendRefused::Full(f)) if !target.blocked() && !stop.is_cancelled() => frame = f,
            Err(SendRefused::Full(f)) => {
                // Parked again (or stopping) while we waited: back to the retry topic.
                let Frame { ack, .. } = f;
                feed.parker
                    .park_record(&target.topic, payload, key, headers(), ack, &target.parked)
                    .await;
                return;
            }
            Err(SendRefused::Closed(f)) => {
                // The sink is gone (shutdown): uncommitted, read again after a restart.
                drop(f);
                return;
            }
        }
    }
}

/// Pauses the assigned retry partitions of blocked destinations and resumes the others.
fn update_pauses(src: &KafkaSource, targets: &[RetryTarget], paused: &mut HashSet<(String, i32)>) {
    let Ok(assignment) = src.consumer.assignment() else {
        return;
    };
    let mut pause = TopicPartitionList::new();
    let mut resume = TopicPartitionList::new();
    for e in assignment.elements() {
        let Some(t) = targets.iter().find(|t| &*t.topic == e.topic()) else {
            continue;
        };
        let key = (e.topic().to_owned(), e.partition());
        let blocked = t.blocked();
        if blocked && !paused.contains(&key) {
            pause.add_partition(e.topic(), e.partition());
            paused.insert(key);
        } else if !blocked && paused.remove(&key) {
            resume.add_partition(e.topic(), e.partition());
        }
    }
    // The lists hold no client references; still dropped here, before anything else.
    drop(assignment);
    if pause.count() > 0 {
        if let Err(e) = src.consumer.pause(&pause) {
            tracing::debug!(error = %e, "Pausing retry partitions failed.");
        }
    }
    if resume.count() > 0 {
        if let Err(e) = src.consumer.resume(&resume) {
            tracing::debug!(error = %e, "Resuming retry partitions failed.");
        }
    }
}
