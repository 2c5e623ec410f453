//! Per-destination metric handles (registered once, emitted per batch) and throttled logging.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{Counter, Gauge, Histogram};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::throttle::Throttle;

use super::connector::SinkError;
use super::status::{Shared, SinkState};
use super::Frame;

/// Everything a destination task reports through: metrics, status and logs.
pub(crate) struct Ctx {
    pub name: String,
    pub shared: Arc<Shared>,
    events_sent: Counter,
    bytes_sent: Counter,
    batch_seconds: Histogram,
    end_to_end: Histogram,
    up: Gauge,
    reconnects: Counter,
    queue: Gauge,
    /// The queue's sender side, to read its depth from anywhere in the task.
    queue_probe: super::queue::QueueProbe,
    /// The handle asked to close.
    closing: CancellationToken,
    dropped_oversize: Counter,
    throttle: Throttle,
}

impl Ctx {
    pub fn new(
        name: &str,
        shared: Arc<Shared>,
        queue_probe: super::queue::QueueProbe,
        closing: CancellationToken,
    ) -> Self {
        let d = || name.to_owned();
        Ctx {
            name: name.to_owned(),
            shared,
            events_sent: metrics::counter!(m::EVENTS_SENT_TOTAL, "destination" => d()),
            bytes_sent: metrics::counter!(m::BYTES_SENT_TOTAL, "destination" => d()),
            batch_seconds: metrics::histogram!(m::SEND_BATCH_SECONDS, "destination" => d()),
            end_to_end: metrics::histogram!(m::END_TO_END_SECONDS, "destination" => d()),
            up: metrics::gauge!(m::DESTINATION_UP, "destination" => d()),
            reconnects: metrics::counter!(m::DESTINATION_RECONNECTS_TOTAL, "destination" => d()),
            queue: metrics::gauge!(m::DESTINATION_QUEUE_EVENTS, "destination" => d()),
            queue_probe,
            closing,
            dropped_oversize: metrics::counter!(
                m::EVENTS_DROPPED_TOTAL,
                "destination" => d(),
                "reason" => "oversize"
            ),
            throttle: Throttle::new(Duration::from_secs(60)),
        }
    }

    /// One batch (or resend) of `frames`, `bytes` long, went to the socket in `took`.
    pub fn written<'a>(
        &self,
        frames: impl Iterator<Item = &'a Frame>,
        bytes: usize,
        took: Duration,
    ) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut n = 0u64;
        let mut oldest: Option<i64> = None;
        for f in frames {
            n += 1;
            if let Some(t) = f.event_time_ms {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        self.events_sent.increment(n);
        self.bytes_sent.increment(bytes as u64);
        self.batch_seconds.record(took.as_secs_f64());
        // One sample per batch: its oldest event, so the histogram errs on the slow side.
        if let Some(t) = oldest {
            self.end_to_end
                .record((now_ms.saturating_sub(t)).max(0) as f64 / 1000.0);
        }
        Shared::add(&self.shared.written, n);
        Shared::add(&self.shared.written_bytes, bytes as u64);
        Shared::add(&self.shared.batches, 1);
    }

    /// Closing with every accepted frame acked: there is nothing left to connect for.
    pub fn nothing_left(&self) -> bool {
        self.closing.is_cancelled()
            && Shared::get(&self.shared.acked) >= Shared::get(&self.shared.accepted)
    }

    /// Sleeps for `d`, or less if the handle starts closing meanwhile.
    pub async fn sleep_unless_closing(&self, d: Duration) {
        if self.closing.is_cancelled() {
            tokio::time::sleep(d).await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = self.closing.cancelled() => {}
            }
        }
    }

    pub fn acked(&self, frames: usize) {
        Shared::add(&self.shared.acked, frames as u64);
    }

    pub fn in_flight(&self, frames: usize) {
        self.shared
            .in_flight
            .store(frames as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Updates `destination_queue_events` (per batch, and while waiting to reconnect).
    pub fn update_queue(&self) {
        self.queue.set(self.queue_probe.len() as f64);
    }

    pub fn send_calls(&self, n: u64) {
        Shared::add(&self.shared.send_calls, n);
    }

    pub fn reconnect_attempt(&self) {
        self.reconnects.increment(1);
        Shared::add(&self.shared.reconnects, 1);
    }

    pub fn dropped_oversize(&self, n: u64) {
        self.dropped_oversize.increment(n);
    }

    pub fn set_state(&self, s: SinkState) {
        self.shared.set_state(s);
        self.up
            .set(if s == SinkState::Connected { 1.0 } else { 0.0 });
    }

    /// Records `e` as the last error and logs it at most once a minute per error kind.
    pub fn error(&self, e: &SinkError, what: &'static str) {
        self.shared.set_error(e);
        if let Some(suppressed) = self.throttle.allow(e.error_type()) {
            tracing::warn!(
                destination = %self.name,
                error = %e,
                error_type = e.error_type(),
                suppressed,
                "{what}"
            );
        }
    }

    /// Logs data loss (at `error`), at most once a minute per `key`.
    pub fn loss(&self, key: &str, bytes: usize, msg: &'static str) {
        if let Some(suppressed) = self.throttle.allow(key) {
            tracing::error!(destination = %self.name, bytes, suppressed, "{msg}");
        }
    }

    /// Logs an event worth an operator's attention, throttled like errors.
    pub fn note(&self, key: &str, msg: &'static str) {
        if let Some(suppressed) = self.throttle.allow(key) {
            tracing::info!(destination = %self.name, suppressed, "{msg}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{NoStore, PartitionTracker};
    use bytes::Bytes;
    use metrics::{Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    /// Samples recorded into one histogram.
    #[derive(Default)]
    struct Samples(Mutex<Vec<f64>>);
    impl metrics::HistogramFn for Samples {
        fn record(&self, v: f64) {
            self.0.lock().unwrap().push(v);
        }
    }

    /// Keeps every registered metric by its rendered key (`name{label=value,...}`).
    #[derive(Default)]
    struct Capture {
        atomics: Mutex<HashMap<String, Arc<AtomicU64>>>,
        histograms: Mutex<HashMap<String, Arc<Samples>>>,
    }

    fn render(key: &Key) -> String {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Capture {
        fn atomic(&self, key: &Key) -> Arc<AtomicU64> {
            Arc::clone(self.atomics.lock().unwrap().entry(render(key)).or_default())
        }
        fn counter(&self, name: &str) -> u64 {
            let key = format!("{name}{{destination=d1}}");
            self.atomics.lock().unwrap()[&key].load(Ordering::Relaxed)
        }
        fn gauge(&self, name: &str) -> f64 {
            f64::from_bits(self.counter(name))
        }
        fn samples(&self, name: &str) -> Vec<f64> {
            let key = format!("{name}{{destination=d1}}");
            self.histograms.lock().unwrap()[&key]
                .0
                .lock()
                .unwrap()
                .clone()
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.atomic(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.atomic(key))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            let s = Arc::clone(
                self.histograms
                    .lock()
                    .unwrap()
                    .entry(render(key))
                    .or_default(),
            );
            Histogram::from_arc(s)
        }
    }

    #[test]
    fn metrics_are_emitted_per_batch_with_the_destination_label() {
        let rec = Capture::default();
        let (tx, _rx) = super::super::queue::queue(8);
        let shared = Arc::new(Shared::default());
        let ctx = metrics::with_local_recorder(&rec, || {
            Ctx::new(
                "d1",
                Arc::clone(&shared),
                tx.probe(),
                CancellationToken::new(),
            )
        });
        let t = PartitionTracker::new("t", 0, Arc::new(NoStore));
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let frames: Vec<Frame> = (0..3)
            .map(|i| Frame {
                bytes: Bytes::from_static(b"abcd"),
                ack: t.dispatch(i, 1).pop().unwrap(),
                event_time_ms: Some(now_ms - 2000 + i * 500),
            })
            .collect();
        ctx.written(frames.iter(), 12, Duration::from_millis(3));
        ctx.set_state(SinkState::Connected);
        assert_eq!(rec.gauge(m::DESTINATION_UP), 1.0);
        ctx.set_state(SinkState::Reconnecting);
        ctx.reconnect_attempt();
        for f in frames {
            tx.try_send(f).unwrap();
        }
        ctx.update_queue();

        assert_eq!(rec.counter(m::EVENTS_SENT_TOTAL), 3);
        assert_eq!(rec.counter(m::BYTES_SENT_TOTAL), 12);
        assert_eq!(rec.counter(m::DESTINATION_RECONNECTS_TOTAL), 1);
        assert_eq!(rec.gauge(m::DESTINATION_UP), 0.0);
        assert_eq!(rec.gauge(m::DESTINATION_QUEUE_EVENTS), 3.0);
        assert_eq!(rec.samples(m::SEND_BATCH_SECONDS), vec![0.003]);
        let e2e = rec.samples(m::END_TO_END_SECONDS);
        assert_eq!(e2e.len(), 1, "one sample per batch");
        assert!(
            (1.9..2.5).contains(&e2e[0]),
            "the oldest event's latency: {e2e:?}"
        );
        assert_eq!(Shared::get(&shared.batches), 1);
    }
}
