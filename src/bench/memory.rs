//! Memory under backpressure (performance.md): events are produced live at 10 % of the
//! product's measured rate while the product, with default settings, forwards them to a TCP
//! receiver that reads at 1 % of that input rate. Its resident memory is sampled every 250 ms:
//! the queue fills, the destination parks what it cannot take, and memory must stay bounded
//! (target: under 256 MiB).

use std::time::{Duration, Instant};

use super::latency::produce_live;
use super::measure::{http_get, ready_product, rss_mb, stop};

use crate::receiver::{Receiver, Split};

/// What one slow-receiver run saw.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Events produced per second.
    pub input_rate: f64,
    /// Frames the receiver read per second (paced for 1 % of the input rate).
    pub read_rate: f64,
    /// Highest resident memory sampled (VmRSS), MiB.
    pub peak_mb: f64,
    /// Resident memory at the end of the window, MiB.
    pub end_mb: f64,
    /// Frames the slow receiver got.
    pub received: usize,
    /// Events parked to the retry topic (`events_parked_total`).
    pub parked: f64,
}

/// The receiver paces bytes, not frames: RFC 5424 frames of the sample events are about this
/// long (the receiver read 1,360 frames/s when paced for 289 events of 944 B).
const FRAME_BYTES: f64 = 200.0;

/// Produces to `topic` at `input_rate` for `secs` seconds while the product forwards to a
/// receiver reading 1 % of that.
///
/// # Errors
/// When the receiver, the producer or the child cannot start.
pub async fn slow_receiver(
    brokers: &str,
    topic: &str,
    group: &str,
    input_rate: u64,
    secs: u64,
) -> anyhow::Result<Memory> {
    let read_rate = (input_rate as f64 * 0.01).max(10.0);
    let chunk = 16 * 1024;
    let pause = Duration::from_secs_f64(chunk as f64 / (read_rate * FRAME_BYTES));
    let rx = Receiver::tcp_paced(Split::OctetCounting, chunk, pause).await?;
    let (mut child, admin, dir) = ready_product(rx.addr(), brokers, topic, group, "memory").await?;
    let pid = child.id();
    let sample = async {
        let end = Instant::now() + Duration::from_secs(secs);
        let (mut peak, mut last) = (0.0f64, f64::NAN);
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(250)).await;
            last = rss_mb(pid, "VmRSS:");
            peak = peak.max(last);
        }
        (peak, last)
    };
    let (produced, (peak_mb, end_mb)) =
        tokio::join!(produce_live(brokers, topic, input_rate, secs), sample);
    let (_, achieved) = produced?;
    let parked = http_get(admin, "/metrics").map_or(f64::NAN, |m| {
        m.lines()
            .filter(|l| l.starts_with("plura_forwarder_events_parked_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    });
    stop(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Memory {
        input_rate: achieved,
        read_rate: rx.count() as f64 / secs.max(1) as f64,
        peak_mb,
        end_mb,
        received: rx.count(),
        parked,
    })
}
