//! Memory under backpressure (performance.md): events are produced live at 10 % of the
//! product's measured rate while the product, with default settings, forwards them to a TCP
//! receiver that reads at 1 % of that input rate. Its resident memory is sampled every 250 ms:
//! the queue fills, the destination parks what it cannot take, and memory must stay bounded
//! (target: under 256 MiB). Then the input stops and the receiver reads at full speed: once it
//! has every event (parked ones come back from the retry topic) or nothing more comes, memory
//! must return near the size it had when idle before the run. With several backlogs the slow
//! window and the recovery repeat in the same process: what stays after each shows whether a
//! burst leaves memory behind that the next one adds to.

use std::time::{Duration, Instant};

use super::live::produce_live;
use super::measure::{http_get, ready_product, rss_mb, stop};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::receiver::{Receiver, Split};

/// What one slow-receiver run saw.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Events produced per second.
    pub input_rate: f64,
    /// Frames the receiver read per second (paced for 1 % of the input rate).
    pub read_rate: f64,
    /// The highest resident memory (VmRSS) sampled in each backlog, MiB.
    pub peaks_mb: Vec<f64>,
    /// Resident memory at the end of the slow window, MiB.
    pub end_mb: f64,
    /// Resident memory once ready, before any input, MiB.
    pub idle_mb: f64,
    /// Resident memory after each backlog's recovery (the receiver unpaced, until it had every
    /// event or nothing more came) and 12 s idle, MiB.
    pub after_mb: Vec<f64>,
    /// Seconds from unpacing the receiver until it had every produced event, or until the last
    /// one arrived when some never came (the mock deleted them); the longest recovery.
    pub drain_s: f64,
    /// Frames the slow receiver got in the slow window.
    pub received: usize,
    /// Events produced (in all backlogs).
    pub produced: u64,
    /// Frames the receiver had once recovery ended.
    pub delivered: usize,
    /// Parked events the mock cluster deleted (it keeps 5 MiB per partition) before they could
    /// come back: the retry topic's low watermark.
    pub deleted_by_mock: i64,
    /// Events parked to the retry topic (`events_parked_total`).
    pub parked: f64,
}

impl Memory {
    /// The highest resident memory sampled in the whole run, MiB.
    pub fn peak_mb(&self) -> f64 {
        self.peaks_mb.iter().copied().fold(0.0, f64::max)
    }
}

/// The receiver paces bytes, not frames: RFC 5424 frames of the sample events are about this
/// long (the receiver read 1,360 frames/s when paced for 289 events of 944 B).
const FRAME_BYTES: f64 = 200.0;

/// Produces to `topic` at `input_rate` for `secs` seconds while the product forwards to a
/// receiver reading 1 % of that, then lets the receiver recover; `backlogs` times in the same
/// product process.
///
/// # Errors
/// When the receiver, the producer or the child cannot start.
pub async fn slow_receiver(
    brokers: &str,
    topic: &str,
    group: &str,
    input_rate: u64,
    secs: u64,
    backlogs: usize,
) -> anyhow::Result<Memory> {
    let read_rate = (input_rate as f64 * 0.01).max(10.0);
    let chunk = 16 * 1024;
    let pause = Duration::from_secs_f64(chunk as f64 / (read_rate * FRAME_BYTES));
    let rx = Receiver::tcp_paced(Split::OctetCounting, chunk, pause)
        .await?
        .counting();
    let (mut child, admin, dir) =
        ready_product(rx.addr(), brokers, topic, group, "memory", false).await?;
    let pid = child.id();
    let idle_mb = rss_mb(pid, "VmRSS:");
    let mut m = Memory {
        idle_mb,
        ..Memory::default()
    };
    let (mut achieved, mut slow_received) = (0.0, 0);
    let n = backlogs.max(1);
    for _ in 0..n {
        let before = rx.count();
        let (produced, (peak_mb, end_mb)) = tokio::join!(
            produce_live(brokers, topic, input_rate, secs),
            sample_rss(pid, secs)
        );
        let live = produced?;
        m.produced += live.produced;
        achieved += live.rate;
        m.end_mb = end_mb;
        m.peaks_mb.push(peak_mb);
        slow_received += rx.count() - before;
        rx.unpace();
        let drain_s = drained(&rx, m.produced as usize, DRAIN_LIMIT).await;
        m.drain_s = m.drain_s.max(drain_s);
        // The product gives freed memory back once it has been idle for a while (`malloc`).
        tokio::time::sleep(SETTLE).await;
        m.after_mb.push(rss_mb(pid, "VmRSS:"));
        rx.pace();
    }
    let parked = http_get(admin, "/metrics").map_or(f64::NAN, |text| {
        text.lines()
            .filter(|l| l.starts_with("plura_forwarder_events_parked_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    });
    stop(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Memory {
        input_rate: achieved / n as f64,
        read_rate: slow_received as f64 / (secs.max(1) * n as u64) as f64,
        received: slow_received,
        delivered: rx.count(),
        deleted_by_mock: retry_low_watermark(brokers).unwrap_or(-1),
        parked,
        ..m
    })
}

/// The highest and the last resident memory (MiB) of `pid`, sampled every 250 ms for `secs`.
async fn sample_rss(pid: u32, secs: u64) -> (f64, f64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut peak, mut last) = (0.0f64, f64::NAN);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        last = rss_mb(pid, "VmRSS:");
        peak = peak.max(last);
    }
    (peak, last)
}

/// After recovery: the product trims its heap after 5 s under 5 % of a core, checked every 5 s.
pub(super) const SETTLE: Duration = Duration::from_secs(12);

/// How long recovery may take: parked events come back through the retry consumer.
const DRAIN_LIMIT: Duration = Duration::from_secs(90);

/// Seconds until `rx` holds at least `n` frames or, when frames stop arriving for 5 s first
/// (the mock deleted some), until the last one arrived; at most `limit`.
async fn drained(rx: &Receiver, n: usize, limit: Duration) -> f64 {
    let t0 = Instant::now();
    let (mut last, mut progress) = (rx.count(), Instant::now());
    while t0.elapsed() < limit && progress.elapsed() < Duration::from_secs(5) {
        let count = rx.wait_for(n, Duration::from_millis(250)).await;
        if count >= n {
            return t0.elapsed().as_secs_f64();
        }
        if count != last {
            (last, progress) = (count, Instant::now());
        }
    }
    progress.duration_since(t0).as_secs_f64()
}

/// The low watermarks of the destination's retry topic (default `retry_topic`, destination
/// `d0`), summed over its partitions.
fn retry_low_watermark(brokers: &str) -> anyhow::Result<i64> {
    let topic = crate::pipeline::park::retry_topic_name("plura.forwarder.retry", "d0");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let meta = c.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
    let mut deleted = 0;
    for t in meta.topics() {
        for p in t.partitions() {
            let (low, _) = c.fetch_watermarks(&topic, p.id(), Duration::from_secs(5))?;
            deleted += low;
        }
    }
    Ok(deleted)
}
