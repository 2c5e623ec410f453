//! Latency at a fixed rate: the product consumes events produced live at `rate` events/s (half
//! its measured maximum, per performance.md), and `end_to_end_seconds` (Kafka timestamp to
//! socket write, the oldest event of each batch) is read from its `/metrics`.

use std::time::Duration;

use super::live::produce_live;
use super::measure::{busy_share, http_get, machine_ticks, ready_product, stop};

use crate::receiver::{Receiver, Split};

/// What one latency run saw.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Events produced per second (achieved).
    pub rate: f64,
    /// Events produced, and frames received.
    pub produced: u64,
    /// Frames received.
    pub received: usize,
    /// Quantiles of `end_to_end_seconds`, in ms (histogram interpolation, as Prometheus does).
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// p50 and p99 of the batches written after the first [`WARM_UP`] of producing: the
    /// steady state, without the start (the first fetch after the group join, a backlog of
    /// the events produced meanwhile). NaN for a run no longer than that.
    pub steady_ms: (f64, f64),
    /// How busy the whole machine was while producing (0–1): the producer and the broker run
    /// beside the forwarder.
    pub machine_busy: f64,
    /// p50 and p99 of the time from `send` to the broker's acknowledgement, in ms: the part of
    /// the latency before the forwarder could fetch the event.
    pub ack_ms: (f64, f64),
}

/// Produces to `topic` at `rate` events/s for `secs` seconds while the product forwards them.
///
/// # Errors
/// When the receiver, the producer or the child cannot start, or the child never gets ready.
pub async fn at_rate(
    brokers: &str,
    topic: &str,
    group: &str,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Latency> {
    let rx = Receiver::tcp(Split::OctetCounting).await?.counting();
    let (mut child, admin, dir) =
        ready_product(rx.addr(), brokers, topic, group, "latency", true).await?;
    let ticks0 = machine_ticks();
    // The histogram as it stood after the warm-up, taken while producing goes on.
    let warm = async {
        tokio::time::sleep(WARM_UP).await;
        let got = tokio::task::spawn_blocking(move || http_get(admin, "/metrics")).await;
        got.ok().flatten().unwrap_or_default()
    };
    let (live, warm) = tokio::join!(produce_live(brokers, topic, rate, secs), warm);
    let live = live?;
    let produced = live.produced;
    let machine_busy = busy_share(ticks0, machine_ticks());
    rx.wait_for(produced as usize, Duration::from_secs(30))
        .await;
    let metrics = http_get(admin, "/metrics").unwrap_or_default();
    let (p50_ms, p99_ms) = quantiles(&buckets(&metrics));
    let steady_ms = if secs > WARM_UP.as_secs() {
        quantiles(&since(&buckets(&metrics), &buckets(&warm)))
    } else {
        (f64::NAN, f64::NAN)
    };
    // The whole distribution, on the progress stream: the tail's shape tells stalls from queueing.
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("plura_forwarder_end_to_end_seconds_bucket{"))
    {
        eprintln!("  latency {line}");
    }
    stop(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Latency {
        rate: live.rate,
        ack_ms: (live.ack_p50_ms, live.ack_p99_ms),
        produced,
        received: rx.count(),
        p50_ms,
        p99_ms,
        steady_ms,
        machine_busy,
    })
}

/// The start of a latency run left out of [`Latency::steady_ms`].
pub const WARM_UP: Duration = Duration::from_secs(1);

/// The cumulative buckets of `end_to_end_seconds` summed over destinations: (upper bound in
/// seconds, count), in order.
fn buckets(metrics: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("plura_forwarder_end_to_end_seconds_bucket{"))
    {
        let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        let count: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0.0);
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some(b) => b.1 += count,
            None => buckets.push((le, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// What was observed between two readings of the same histogram (`earlier` may be empty:
/// nothing observed yet).
fn since(later: &[(f64, f64)], earlier: &[(f64, f64)]) -> Vec<(f64, f64)> {
    later
        .iter()
        .map(|&(le, c)| {
            let before = earlier.iter().find(|(b, _)| *b == le).map_or(0.0, |b| b.1);
            (le, c - before)
        })
        .collect()
}

/// p50 and p99 of cumulative buckets in ms, interpolated inside the bucket as Prometheus'
/// `histogram_quantile` does.
fn quantiles(buckets: &[(f64, f64)]) -> (f64, f64) {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let q = |q: f64| {
        let want = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, c) in buckets {
            if c >= want {
                if le.is_infinite() {
                    return prev.0 * 1000.0;
                }
                let frac = if c > prev.1 {
                    (want - prev.1) / (c - prev.1)
                } else {
                    1.0
                };
                return (prev.0 + (le - prev.0) * frac) * 1000.0;
            }
            prev = (le, c);
        }
        f64::NAN
    };
    if total <= 0.0 {
        (f64::NAN, f64::NAN)
    } else {
        (q(0.5), q(0.99))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let m = "plura_forwarder_end_to_end_seconds_bucket{destination=\"d\",le=\"0.001\"} 50\n\
                 plura_forwarder_end_to_end_seconds_bucket{destination=\"d\",le=\"0.01\"} 100\n\
                 plura_forwarder_end_to_end_seconds_bucket{destination=\"d\",le=\"+Inf\"} 100\n";
        let (p50, p99) = super::quantiles(&super::buckets(m));
        assert!((p50 - 1.0).abs() < 1e-9, "{p50}");
        assert!((p99 - 9.82).abs() < 1e-9, "{p99}");
    }

    /// The steady-state figures leave out what the histogram held at the warm-up reading.
    #[test]
    fn quantiles_since_a_reading_leave_out_what_came_before() {
        let at = |fast: u32, slow: u32| {
            format!(
                "plura_forwarder_end_to_end_seconds_bucket{{destination=\"d\",le=\"0.01\"}} {fast}\n\
                 plura_forwarder_end_to_end_seconds_bucket{{destination=\"d\",le=\"0.1\"}} {}\n\
                 plura_forwarder_end_to_end_seconds_bucket{{destination=\"d\",le=\"+Inf\"}} {}\n",
                fast + slow,
                fast + slow
            )
        };
        // The start: 50 fast and 50 slow batches; afterwards 1,000 more, all fast.
        let (start, end) = (super::buckets(&at(50, 50)), super::buckets(&at(1050, 50)));
        let (_, whole_p99) = super::quantiles(&end);
        assert!(
            whole_p99 > 10.0,
            "the slow start is in the whole run: {whole_p99}"
        );
        let (_, steady_p99) = super::quantiles(&super::since(&end, &start));
        assert!((steady_p99 - 9.9).abs() < 1e-9, "{steady_p99}");
        assert!(super::quantiles(&super::since(&end, &end)).1.is_nan());
        assert_eq!(super::since(&end, &[]), end);
    }
}
