//! Pipeline: one Kafka message in, frames out to every destination that wants the event.
//!
//! decode → route → render once per distinct settings → the same `Bytes` to each destination.
//! Every (event, destination) pair owes one [`Ack`]; the event's offset is stored only when all
//! are done. Invalid events and messages a destination cannot take go to the dead-letter topic.

pub mod dead_letter;
pub mod decode_burst;
pub mod park;
mod retry;
mod run;

pub use dead_letter::{DeadLetter, Origin};
pub use decode_burst::Decoded;
pub use park::{ParkFlag, Parker};
pub use run::{run, RunOptions, StartInfo};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use metrics::Counter;

use crate::ack::{Ack, PartitionTracker};
use crate::event::DecodeOptions;
use crate::metrics as m;
use crate::render::{RenderContext, Rendered, Renderer, SharedText};
use crate::route::{Decision, Router};
use crate::sink::{Frame, SendRefused, SinkHandle, SinkSender};
use crate::throttle::Throttle;
use park::ParkGate;
use rdkafka::message::BorrowedHeaders;
use rdkafka::Message as _;

/// One Kafka message as the pipeline sees it.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Message key (the group id by convention).
    pub key: Option<&'a [u8]>,
    /// Message value; `None` for a tombstone.
    pub payload: Option<&'a [u8]>,
    /// Kafka timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The message's headers (copied onto parked events).
    pub headers: Headers<'a>,
}

/// A message's headers, parsed only when asked: librdkafka parses them on every call (6 % of
/// the pipeline thread when done per event), and only parked events need them.
#[derive(Clone, Copy)]
pub enum Headers<'a> {
    /// The message has none.
    None,
    /// Still inside the consumed message.
    Borrowed(&'a crate::source::Msg<'a>),
}

impl<'a> Headers<'a> {
    /// The headers, if the message has any.
    pub fn get(self) -> Option<&'a BorrowedHeaders> {
        match self {
            Headers::None => None,
            Headers::Borrowed(m) => m.headers(),
        }
    }
}

impl std::fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp_ms", &self.timestamp_ms)
            .finish_non_exhaustive()
    }
}

/// A destination as the pipeline drives it.
pub struct Destination {
    /// Name (metric label).
    pub name: String,
    /// Index into the pipeline's distinct renderers.
    renderer: usize,
    /// The sink task.
    pub sink: SinkHandle,
    /// A sender to the sink's queue (cheap state reads).
    sender: SinkSender,
    /// Counters registered once, so that the per-event path neither allocates nor looks up.
    counters: DestinationCounters,
}

struct DestinationCounters {
    routed: Counter,
    filtered: Counter,
    dropped_oversize: Counter,
    truncated: Counter,
}

impl DestinationCounters {
    fn new(name: &str) -> Self {
        let d = || ("destination", name.to_owned());
        DestinationCounters {
            routed: metrics::counter!(m::EVENTS_ROUTED_TOTAL, &[d()]),
            filtered: metrics::counter!(m::EVENTS_FILTERED_TOTAL, &[d()]),
            dropped_oversize: metrics::counter!(
                m::EVENTS_DROPPED_TOTAL,
                &[d(), ("reason", "oversize".to_owned())]
            ),
            truncated: metrics::counter!(m::EVENTS_TRUNCATED_TOTAL, &[d()]),
        }
    }
}

/// Decode options per topic, resolved once.
#[derive(Debug, Clone)]
pub struct TopicOptions {
    /// Topic → its bound log type, if any.
    pub bound: Vec<(String, crate::event::LogType)>,
    /// `kafka.max_event_bytes`.
    pub max_event_bytes: usize,
    /// Whether anything reads `logOrigin` (see [`DecodeOptions::raw_log`]).
    pub raw_log: bool,
}

impl TopicOptions {
    fn for_topic(&self, topic: &str) -> DecodeOptions {
        DecodeOptions {
            max_event_bytes: self.max_event_bytes,
            topic_log_type: self.bound.iter().find(|(t, _)| t == topic).map(|(_, l)| *l),
            raw_log: self.raw_log,
        }
    }
}

/// The routing and rendering state of a running forwarder.
pub struct Pipeline {
    router: Router,
    renderers: Vec<Renderer>,
    destinations: Vec<Destination>,
    dead_letter: DeadLetter,
    topics: TopicOptions,
    // Reused per event so that the steady state allocates nothing here.
    decisions: Vec<Decision>,
    frames: Vec<Option<(Rendered, Bytes)>>,
    /// The event's TEXT body, when two renderers write the same one (a fan-out to RFC 3164
    /// and RFC 5424 destinations): written once per event, copied by the other.
    text: Option<SharedText>,
    acks: Vec<Ack>,
    buf: BytesMut,
    throttle: Throttle,
    /// `events_consumed_total` per topic, registered on first use.
    consumed: Vec<(String, Counter)>,
    /// Compliance controls, looked up once per routed event (see [`Pipeline::set_compliance`]).
    compliance: Option<Arc<crate::compliance::Compliance>>,
    /// Automatic tickets: offered every consumed event, never waited on.
    tickets: Option<Arc<crate::ticket::TicketRouter>>,
    /// Parking, when enabled: the producer and one gate per destination.
    parking: Option<(Parker, Vec<ParkGate>)>,
    /// Events handled since the destinations were last told that input had paused.
    since_idle: bool,
    /// Per destination: the frames of the current burst, queued together by [`Pipeline::flush`].
    staged: Vec<Staged>,
}

/// A destination's frames of the current burst, held in room its queue promised: queued
/// together under one lock at the end of the burst instead of one hand-off per frame (with
/// four destinations the hand-offs were a quarter of the pipeline thread).
#[derive(Default)]
struct Staged {
    frames: Vec<Frame>,
    /// Room promised by the queue ([`SinkSender::reserve`]); `frames.len() <= room`.
    room: usize,
}

/// Room asked for at a time: a burst's worth.
const STAGE_ROOM: usize = decode_burst::BURST_MAX;

impl Staged {
    /// Whether one more frame may be staged: there is promised room left, or the queue
    /// promises more once what is staged is queued.
    fn has_room(&mut self, dest: &Destination, throttle: &Throttle) -> bool {
        if self.frames.len() < self.room {
            return true;
        }
        self.queue(dest, throttle);
        self.room = dest.sender.reserve(STAGE_ROOM);
        self.room > 0
    }

    /// Queues what is staged and gives back the promised room left.
    fn queue(&mut self, dest: &Destination, throttle: &Throttle) {
        if self.room == 0 {
            return;
        }
        if dest
            .sender
            .send_reserved(&mut self.frames, std::mem::take(&mut self.room))
            .is_err()
        {
            for f in self.frames.drain(..) {
                sink_gone(dest, f, throttle);
            }
        }
    }
}

/// Queues every destination's staged frames.
fn queue_staged(destinations: &[Destination], staged: &mut [Staged], throttle: &Throttle) {
    for (dest, st) in destinations.iter().zip(staged) {
        st.queue(dest, throttle);
    }
}

/// What happened to one message (for tests and the demo's summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Decoded; `routed` destinations took it.
    Routed {
        /// Destinations that got a frame (or a dead letter for an oversize frame).
        routed: usize,
    },
    /// Not a valid event; dead-lettered with this reason.
    Invalid(&'static str),
}

impl Pipeline {
    /// Builds the pipeline. `destinations` pairs each configured destination (in router order)
    /// with its rendering settings and running sink.
    pub fn new(
        router: Router,
        destinations: Vec<(crate::render::RenderSettings, SinkHandle)>,
        dead_letter: DeadLetter,
        topics: TopicOptions,
    ) -> Self {
        let mut renderers: Vec<Renderer> = Vec::new();
        let mut dests = Vec::with_capacity(destinations.len());
        for (settings, sink) in destinations {
            // Equal settings render equal bytes: render once, share the frame.
            let idx = match renderers.iter().position(|r| *r.settings() == settings) {
                Some(i) => i,
                None => {
                    renderers.push(Renderer::new(settings));
                    renderers.len() - 1
                }
            };
            let name = sink.name().to_owned();
            let counters = DestinationCounters::new(&name);
            let sender = sink.sender();
            dests.push(Destination {
                name,
                renderer: idx,
                sink,
                sender,
                counters,
            });
        }
        let n = dests.len();
        let shared_text = renderers
            .iter()
            .enumerate()
            .any(|(i, a)| renderers[i + 1..].iter().any(|b| a.shares_text_with(b)));
        Pipeline {
            router,
            text: shared_text.then(SharedText::default),
            frames: vec![None; renderers.len()],
            renderers,
            destinations: dests,
            dead_letter,
            topics,
            decisions: Vec::with_capacity(n),
            acks: Vec::with_capacity(n),
            buf: BytesMut::with_capacity(64 * 1024),
            throttle: Throttle::new(Duration::from_secs(60)),
            consumed: Vec::new(),
            compliance: None,
            tickets: None,
            parking: None,
            since_idle: false,
            staged: (0..n).map(|_| Staged::default()).collect(),
        }
    }

    /// Offers each consumed event to the ticket systems whose `[ticket.when]` wants it. Only
    /// the instance that owns the partition sees the event, so replicas never both offer it.
    pub fn set_tickets(&mut self, tickets: Option<Arc<crate::ticket::TicketRouter>>) {
        self.tickets = tickets;
    }

    /// Looks up (and counts) each event's compliance controls and hands them to the
    /// renderers (written by destinations with `include_compliance = true`).
    pub fn set_compliance(&mut self, compliance: Option<Arc<crate::compliance::Compliance>>) {
        self.compliance = compliance;
    }

    /// Parks events of destinations that are down or too slow to their retry topics
    /// `{retry_prefix}.{destination}` (delivery.md §3). Returns each destination's parked
    /// flag, in destination order, for the retry consumer.
    pub fn enable_parking(
        &mut self,
        parker: Parker,
        retry_prefix: &str,
        park_after: Duration,
    ) -> Vec<ParkFlag> {
        let gates: Vec<ParkGate> = self
            .destinations
            .iter()
            .map(|d| {
                let topic = park::retry_topic_name(retry_prefix, &d.name);
                ParkGate::new(&d.name, topic, ParkFlag::default(), park_after)
            })
            .collect();
        let flags = gates.iter().map(|g| g.flag.clone()).collect();
        self.parking = Some((parker, gates));
        flags
    }

    /// Whether destination `i` is parked now.
    pub fn is_parked(&self, i: usize) -> bool {
        self.parking
            .as_ref()
            .and_then(|(_, g)| g.get(i))
            .is_some_and(|g| g.flag.is_parked())
    }

    fn consumed_counter(&mut self, topic: &str) -> &Counter {
        let i = match self.consumed.iter().position(|(t, _)| t == topic) {
            Some(i) => i,
            None => {
                let c = metrics::counter!(m::EVENTS_CONSUMED_TOTAL, "topic" => topic.to_owned());
                self.consumed.push((topic.to_owned(), c));
                self.consumed.len() - 1
            }
        };
        &self.consumed[i].1
    }

    /// The destinations, in config order.
    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    /// Number of distinct renderers (distinct settings).
    pub fn renderer_count(&self) -> usize {
        self.renderers.len()
    }

    /// The consumer has nothing more right now: the destinations write what they have instead
    /// of lingering for more (once per pause in the input, whatever its length).
    pub fn input_paused(&mut self) {
        self.flush();
        if std::mem::take(&mut self.since_idle) {
            self.destinations
                .iter()
                .for_each(|d| d.sender.upstream_idle());
        }
    }

    /// Handles one message: waits while a destination's queue is full (backpressure). Its
    /// frames are queued when it returns.
    pub async fn handle(&mut self, input: Input<'_>, tracker: &Arc<PartitionTracker>) -> Handled {
        let mut decoded = decode_burst::decode_one(&self.topics, &input);
        let handled = self.handle_decoded(input, &mut decoded, tracker).await;
        self.flush();
        handled
    }

    /// Queues the frames that [`Pipeline::handle_decoded`] staged. Call it at the end of each
    /// burst (before waiting for more input): until then the destinations do not see them.
    pub fn flush(&mut self) {
        queue_staged(&self.destinations, &mut self.staged, &self.throttle);
    }

    /// Decodes a burst of ready messages into `out`, in order (see `decode_burst.rs`); each is
    /// then handled with [`Pipeline::handle_decoded`].
    pub fn decode_burst<'a>(&self, inputs: &[Input<'a>], out: &mut Vec<Decoded<'a>>) {
        decode_burst::decode_all(&self.topics, inputs, out);
    }

    /// [`Pipeline::handle`] for a message decoded already (`decoded` is what decoding
    /// `input` gave). Frames that find room at once are staged, and queued by
    /// [`Pipeline::flush`] (or before this waits for room anywhere).
    pub async fn handle_decoded<'a>(
        &mut self,
        input: Input<'a>,
        decoded: &mut Decoded<'a>,
        tracker: &Arc<PartitionTracker>,
    ) -> Handled {
        self.since_idle = true;
        self.consumed_counter(input.topic).increment(1);
        let payload = input.payload.unwrap_or_default();
        let origin = Origin {
            topic: input.topic,
            partition: input.partition,
            offset: input.offset,
        };
        let event = match decoded {
            Ok(ev) => ev,
            Err(invalid) => {
                let reason = invalid.reason();
                metrics::counter!(m::EVENTS_INVALID_TOTAL, "reason" => reason).increment(1);
                if let Some(skipped) = self.throttle.allow(reason) {
                    tracing::warn!(
                        topic = input.topic, partition = input.partition, offset = input.offset,
                        reason, error = %invalid, suppressed = skipped,
                        "Invalid event; sent to the dead-letter topic."
                    );
                }
                tracker.dispatch_into(input.offset, 1, &mut self.acks);
                if let Some(ack) = self.acks.pop() {
                    self.dead_letter
                        .send(payload, input.key, reason, origin, None, ack);
                }
                return Handled::Invalid(reason);
            }
        };
        event.kafka_timestamp_ms = input.timestamp_ms;
        self.router.route(event, &mut self.decisions);
        let routed = self
            .decisions
            .iter()
            .filter(|d| **d == Decision::Routed)
            .count();
        // Acks are taken before anything is sent so that the watermark cannot pass this event.
        tracker.dispatch_into(input.offset, routed as u32, &mut self.acks);
        let ctx = RenderContext { now_us: now_us() };
        let controls = self.compliance.as_deref().and_then(|c| c.lookup(event));
        if let Some(tickets) = self.tickets.as_deref().filter(|t| t.wants(event)) {
            // Rare (a ticket per matching event): the pairs may allocate.
            let pairs: Vec<(&str, &str)> =
                controls.map(|c| c.pairs().collect()).unwrap_or_default();
            let at = crate::ticket::EventOrigin {
                topic: input.topic,
                partition: input.partition,
                offset: input.offset,
            };
            tickets.offer(event, at, &pairs);
        }
        self.frames.iter_mut().for_each(|f| *f = None);
        if let Some(text) = &mut self.text {
            text.clear();
        }
        for (i, decision) in self.decisions.iter().enumerate() {
            let dest = &self.destinations[i];
            match decision {
                Decision::OutOfScope => continue,
                Decision::Filtered => {
                    dest.counters.filtered.increment(1);
                    continue;
                }
                Decision::Routed => {}
            }
            let Some(ack) = self.acks.pop() else { break };
            dest.counters.routed.increment(1);
            let (outcome, bytes) = self.frames[dest.renderer]
                .get_or_insert_with(|| {
                    if self.buf.capacity() < 16 * 1024 {
                        self.buf.reserve(64 * 1024);
                    }
                    let outcome = self.renderers[dest.renderer].render_sharing(
                        event,
                        &ctx,
                        controls,
                        self.text.as_mut(),
                        &mut self.buf,
                    );
                    (outcome, self.buf.split().freeze())
                })
                .clone();
            match outcome {
                Rendered::Oversize => {
                    dest.counters.dropped_oversize.increment(1);
                    self.dead_letter.send(
                        payload,
                        input.key,
                        "oversize",
                        origin,
                        Some(&dest.name),
                        ack,
                    );
                }
                Rendered::Ok | Rendered::Truncated => {
                    if outcome == Rendered::Truncated {
                        dest.counters.truncated.increment(1);
                    }
                    let frame = Frame {
                        bytes,
                        ack,
                        event_time_ms: input.timestamp_ms,
                    };
                    let mut park = self
                        .parking
                        .as_mut()
                        .and_then(|(p, g)| Some((&*p, g.get_mut(i)?)));
                    let parked = park
                        .as_mut()
                        .is_some_and(|(p, g)| p.available() && g.parked(&dest.name, &dest.sender));
                    let staged = &mut self.staged[i];
                    if !parked && staged.has_room(dest, &self.throttle) {
                        staged.frames.push(frame);
                        if let Some((_, gate)) = park {
                            gate.had_room();
                        }
                        continue;
                    }
                    // Waiting or parking: what is staged goes first, so that it is neither
                    // held back by the wait nor overtaken.
                    queue_staged(&self.destinations, &mut self.staged, &self.throttle);
                    deliver(dest, park, frame, &input, &self.throttle).await;
                }
            }
        }
        Handled::Routed { routed }
    }

    /// Stops every destination, flushing and waiting for acknowledgement up to `grace`,
    /// then waits for dead letters in flight.
    pub async fn close(mut self, grace: Duration) {
        self.flush();
        // A destination that is down would keep its queued frames until the deadline, then
        // drop them (redelivered after the restart, to every destination): park them instead.
        if let Some((parker, gates)) = &self.parking {
            for (dest, gate) in self.destinations.iter().zip(gates) {
                if parker.available() && dest.sender.is_down() {
                    park_reclaimed(dest, parker, gate).await;
                }
            }
        }
        // All destinations drain at once, each within the same grace.
        let mut closes = tokio::task::JoinSet::new();
        for d in self.destinations {
            closes.spawn(d.sink.close(grace));
        }
        while let Some(report) = closes.join_next().await {
            tracing::debug!(?report, "Destination closed.");
        }
        self.dead_letter.close(grace).await;
    }
}

/// Hands one frame to its destination, or parks the event when the destination is parked,
/// down, or its queue stays full for `park_after_ms`. Without parking (disabled, or the retry
/// topic cannot be written) it waits for room: backpressure.
async fn deliver(
    dest: &Destination,
    mut park: Option<(&Parker, &mut ParkGate)>,
    frame: Frame,
    input: &Input<'_>,
    throttle: &Throttle,
) {
    let origin = Origin {
        topic: input.topic,
        partition: input.partition,
        offset: input.offset,
    };
    let payload = input.payload.unwrap_or_default();
    if let Some((parker, gate)) = park.as_mut() {
        if parker.available() && gate.parked(&dest.name, &dest.sender) {
            if dest.sender.queued() > 0 && dest.sender.is_down() {
                park_reclaimed(dest, parker, gate).await;
            }
            let Frame { ack, .. } = frame;
            parker
                .park_event(
                    &gate.topic,
                    &dest.name,
                    payload,
                    input.key,
                    origin,
                    input.headers.get(),
                    ack,
                    &gate.parked_total,
                )
                .await;
            return;
        }
    }
    let mut frame = match dest.sender.try_send(frame) {
        Ok(()) => {
            if let Some((_, gate)) = park.as_mut() {
                gate.had_room();
            }
            return;
        }
        Err(SendRefused::Full(f)) => f,
        Err(SendRefused::Closed(f)) => return sink_gone(dest, f, throttle),
    };
    loop {
        let wait = match park.as_mut() {
            Some((parker, gate)) if parker.available() => {
                let wait = gate.full_wait();
                if wait.is_zero() || gate.parked(&dest.name, &dest.sender) {
                    gate.park(&dest.name, "slow");
                    let Frame { ack, .. } = frame;
                    parker
                        .park_event(
                            &gate.topic,
                            &dest.name,
                            payload,
                            input.key,
                            origin,
                            input.headers.get(),
                            ack,
                            &gate.parked_total,
                        )
                        .await;
                    return;
                }
                wait.min(Duration::from_millis(100))
            }
            _ => Duration::from_millis(100),
        };
        match dest.sender.send_timeout(frame, wait).await {
            Ok(()) => return,
            Err(SendRefused::Full(f)) => frame = f,
            Err(SendRefused::Closed(f)) => return sink_gone(dest, f, throttle),
        }
    }
}

/// Takes back the frames still queued for a destination that is down and parks them as they
/// are (rendered, header `rendered`), so that they no longer hold their partitions' commit point.
async fn park_reclaimed(dest: &Destination, parker: &Parker, gate: &ParkGate) {
    let frames = dest.sender.reclaim();
    if frames.is_empty() {
        return;
    }
    tracing::info!(destination = %dest.name, frames = frames.len(), "Parking the frames queued for a destination that is down.");
    for f in frames {
        let headers = rdkafka::message::OwnedHeaders::new_with_capacity(2)
            .insert(rdkafka::message::Header {
                key: "destination",
                value: Some(dest.name.as_str()),
            })
            .insert(rdkafka::message::Header {
                key: park::RENDERED_HEADER,
                value: Some("1"),
            });
        parker
            .park_record(
                &gate.topic,
                &f.bytes,
                None,
                headers,
                f.ack,
                &gate.parked_total,
            )
            .await;
    }
}

/// The sink task is gone: the frame's ack is dropped, so the offset never commits past this
/// event and it is redelivered after a restart.
fn sink_gone(dest: &Destination, frame: Frame, throttle: &Throttle) {
    if throttle.allow("sink_gone").is_some() {
        tracing::error!(destination = %dest.name, "Destination task has stopped; events stay uncommitted.");
    }
    drop(frame);
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
