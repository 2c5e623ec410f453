//! `plura-forwarder bench`: the load harness of performance.md.
//!
//! It starts an in-process Kafka (librdkafka's mock cluster), produces realistic events (all
//! log types and categories, about 650–1500 B, Korean text) once, then for each scenario runs a
//! forwarder as a **separate process** against counting receivers on loopback: the product
//! (`run` with a generated config) and the minimal-forwarder baseline ([`baseline`]), each
//! reading the same data with a fresh consumer group. It measures the receiving window (first
//! to last frame), so the group join is not counted, and the child's CPU time and peak RSS from
//! `/proc`. Figures are medians of `--runs`; ratios are taken within the same run.
//!
//! When rsyslog with imkafka is installed, it is measured too, the same way (`rsyslog.rs`).
//!
//! Latency is measured last, on events produced live at half the measured TCP rate
//! (`latency.rs`), then memory with a receiver reading 1 % of a live input (`memory.rs`).

pub mod baseline;
mod latency;
mod live;
pub(crate) mod measure;
mod memory;
mod rsyslog;

use std::time::Duration;

use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::sample;
use crate::source::embedded::EmbeddedKafka;
use measure::{Sample, Scenario};

/// Options of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchOptions {
    /// Events produced (the mock cluster keeps at most 5 MiB per partition: events × ~900 B
    /// must fit in partitions × 5 MiB).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Partitions of the bench topic.
    #[arg(long, default_value_t = 24)]
    pub partitions: i32,
    /// Runs per scenario (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Only these scenarios (comma-separated names); default all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Seconds of the latency run at half the measured TCP RFC 5424 rate (0: skip it).
    #[arg(long, default_value_t = 5)]
    pub latency_secs: u64,
    /// The latency run's rate, as a fraction of the measured TCP RFC 5424 rate (performance.md:
    /// half).
    #[arg(long, default_value_t = 0.5)]
    pub latency_load: f64,
    /// Seconds of the memory run: input at 10 % of the measured TCP rate, a receiver reading 1 %
    /// of it (0: skip).
    #[arg(long, default_value_t = 60)]
    pub memory_secs: u64,
    /// Backlogs in the memory run, one after the other in the same product process, each
    /// followed by recovery (memory after each is printed).
    #[arg(long, default_value_t = 1)]
    pub memory_backlogs: usize,
    /// Internal: run the minimal forwarder `brokers,group,topic,addr,tcp|udp` until stopped.
    #[arg(long, hide = true)]
    pub baseline_worker: Option<String>,
}

const TOPIC: &str = "bench";

/// Runs the harness and prints the table.
///
/// # Errors
/// When the embedded Kafka, a receiver or a child process cannot start.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<()> {
    if let Some(spec) = &opts.baseline_worker {
        return run_baseline_worker(spec).await;
    }
    let kafka = EmbeddedKafka::start(&[(TOPIC, opts.partitions)])?;
    let brokers = kafka.bootstrap_servers();
    let bytes = produce(&brokers, opts.events).await?;
    check_retained(&brokers, opts.partitions, opts.events)?;
    println!(
        "bench: {} events, {:.1} MB of JSON (mean {} B), {} partitions, {} runs per scenario",
        opts.events,
        bytes as f64 / 1e6,
        bytes / opts.events.max(1),
        opts.partitions,
        opts.runs
    );
    let scenarios: Vec<Scenario> = Scenario::all()
        .into_iter()
        .filter(|s| opts.only.is_empty() || opts.only.iter().any(|o| o == s.name))
        .collect();
    let mut results: Vec<(&'static str, Vec<Sample>)> =
        scenarios.iter().map(|s| (s.name, Vec::new())).collect();
    for run in 0..opts.runs {
        for (i, s) in scenarios.iter().enumerate() {
            let group = format!("bench-{}-{run}", s.name);
            let sample = measure::one(s, &brokers, TOPIC, &group, opts.events).await?;
            eprintln!("  run {run} {:<22} {}", s.name, sample.line());
            results[i].1.push(sample);
        }
    }
    check_retained(&brokers, opts.partitions, opts.events)?;
    print_table(&results, bytes, opts.events);
    let max_rate = results
        .iter()
        .find(|(n, _)| *n == "product-tcp-rfc5424")
        .map(|(_, s)| median(s.iter().map(|x| x.events_per_s).collect()));
    if let (Some(max), true) = (max_rate, opts.latency_secs > 0) {
        let live = "bench-live";
        kafka.create_topic(live, opts.partitions)?;
        let rate = (max * opts.latency_load) as u64;
        let l = latency::at_rate(&brokers, live, "bench-latency", rate, opts.latency_secs).await?;
        println!(
            "latency at {:.0} % load (asked {rate} ev/s, produced {:.0} ev/s for {} s, TCP RFC 5424): \
             p50 {:.1} ms, p99 {:.1} ms; after the first {} s: p50 {:.1} ms, p99 {:.1} ms (target p99 < 50 ms); \
             received {} of {}; machine {:.0} % busy\n\
             of which before the forwarder could fetch, send to broker ack (the harness's producer): p50 {:.1} ms, p99 {:.1} ms",
            opts.latency_load * 100.0,
            l.rate,
            opts.latency_secs,
            l.p50_ms,
            l.p99_ms,
            latency::WARM_UP.as_secs(),
            l.steady_ms.0,
            l.steady_ms.1,
            l.received,
            l.produced,
            l.machine_busy * 100.0,
            l.ack_ms.0,
            l.ack_ms.1,
        );
    }
    if let (Some(max), true) = (max_rate, opts.memory_secs > 0) {
        let live = "bench-memory";
        kafka.create_topic(live, opts.partitions)?;
        let input = (max / 10.0) as u64;
        let m = memory::slow_receiver(
            &brokers,
            live,
            live,
            input,
            opts.memory_secs,
            opts.memory_backlogs,
        )
        .await?;
        println!(
            "memory, input {:.0} ev/s for {} s × {} backlog(s), receiver reading {:.0} ev/s, default \
             settings: idle RSS {:.0} MiB, peak {:.0} MiB (each backlog: {}), {:.0} MiB at the end \
             (target < 256 MiB); received {}, parked {}",
            m.input_rate,
            opts.memory_secs,
            m.after_mb.len(),
            m.read_rate,
            m.idle_mb,
            m.peak_mb(),
            mib_list(&m.peaks_mb),
            m.end_mb,
            m.received,
            m.parked
        );
        println!(
            "memory after recovery (receiver at full speed, then {} s idle): {} MiB; the \
             receiver had {} of {} events, the last after {:.1} s; the mock deleted {} parked events \
             (5 MiB per partition) before they came back",
            memory::SETTLE.as_secs(),
            mib_list(&m.after_mb),
            m.delivered,
            m.produced,
            m.drain_s,
            m.deleted_by_mock
        );
    }
    drop(kafka);
    Ok(())
}

/// `51, 62, 59` for one figure per backlog.
fn mib_list(mb: &[f64]) -> String {
    mb.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn run_baseline_worker(spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [brokers, group, topic, addr, transport] = parts[..] else {
        anyhow::bail!("--baseline-worker takes brokers,group,topic,addr,tcp|udp");
    };
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    let addr = addr.parse()?;
    let udp = transport == "udp";
    tokio::task::spawn_blocking(move || baseline::run(&brokers, &group, &topic, addr, udp)).await?
}

/// Produces the harness's first `n` events ([`sample::harness_event`]); returns the bytes.
async fn produce(brokers: &str, n: u64) -> anyhow::Result<u64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let mut bytes = 0u64;
    let mut pending = Vec::with_capacity(10_000);
    for seq in 0..n {
        let payload = sample::harness_event(seq);
        bytes += payload.len() as u64;
        // Keyed by event, not by group, so that the events spread over every partition.
        let key = seq.to_le_bytes();
        let rec = FutureRecord::to(TOPIC).payload(&payload).key(&key[..]);
        pending.push(
            producer
                .send_result(rec)
                .map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))?,
        );
        if pending.len() >= 10_000 {
            for f in pending.drain(..) {
                f.await?
                    .map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))?;
            }
        }
    }
    for f in pending {
        f.await?
            .map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))?;
    }
    Ok(bytes)
}

/// The mock cluster silently drops data beyond 5 MiB per partition: refuse to report figures
/// measured on a topic that lost events.
fn check_retained(brokers: &str, partitions: i32, n: u64) -> anyhow::Result<()> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let mut total = 0;
    for p in 0..partitions {
        let (low, high) = c.fetch_watermarks(TOPIC, p, Duration::from_secs(5))?;
        anyhow::ensure!(
            low == 0,
            "partition {p} lost data (low watermark {low}): use more partitions or fewer events"
        );
        total += high;
    }
    anyhow::ensure!(total as u64 == n, "the topic holds {total} events, not {n}");
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn print_table(results: &[(&'static str, Vec<Sample>)], bytes: u64, n: u64) {
    let mean = bytes as f64 / n.max(1) as f64;
    println!();
    println!(
        "{:<22} {:>12} {:>8} {:>10} {:>9} {:>13} {:>9}",
        "scenario", "events/s", "MB/s", "CPU µs/ev", "peak RSS", "machine busy", "received"
    );

    for (name, samples) in results {
        let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        let rate = m(|s| s.events_per_s);
        println!(
            "{:<22} {:>12.0} {:>8.1} {:>10.2} {:>7.0}MB {:>12.0}% {:>9}",
            name,
            rate,
            rate * mean / 1e6,
            m(|s| s.cpu_us_per_event),
            m(|s| s.peak_rss_mb),
            m(|s| s.machine_busy) * 100.0,
            samples.iter().map(|s| s.received).min().unwrap_or(0),
        );
    }
    println!();
    let median_of = |name: &str, f: fn(&Sample) -> f64| -> Option<f64> {
        let (_, samples) = results.iter().find(|(n, _)| *n == name)?;
        Some(median(samples.iter().map(f).collect()))
    };
    let rate = |name: &str| median_of(name, |s| s.events_per_s);
    let ratio = |a: &str, b: &str, what: &str| {
        if let (Some(x), Some(y)) = (rate(a), rate(b)) {
            println!("{what:<44} {:>6.2}", x / y);
        }
    };
    ratio(
        "product-tcp-rfc5424",
        "baseline-tcp",
        "TCP RFC 5424 / minimal forwarder (≥ 0.8)",
    );
    ratio(
        "product-tcp-cef",
        "baseline-tcp",
        "TCP CEF / minimal forwarder (≥ 0.8)",
    );
    ratio(
        "product-udp-rfc5424",
        "baseline-udp",
        "UDP RFC 5424 / minimal forwarder (≥ 0.9)",
    );
    ratio(
        "product-tls-rfc5425",
        "baseline-tcp",
        "TLS RFC 5425 / minimal TCP forwarder",
    );
    ratio(
        "product-tls-rfc5425",
        "product-tcp-rfc5424",
        "TLS RFC 5425 / TCP RFC 5424 (product)",
    );
    ratio(
        "product-tcp-rfc5424",
        "rsyslog-tcp-rfc5424",
        "TCP RFC 5424 / rsyslog imkafka→omfwd (≥ 2)",
    );
    ratio(
        "product-udp-rfc5424",
        "rsyslog-udp-rfc5424",
        "UDP RFC 5424 / rsyslog imkafka→omfwd",
    );
    if !rsyslog::available() {
        println!("rsyslog: not installed, not compared (apt install rsyslog rsyslog-kafka)");
    }
    if let (Some(one), Some(two)) = (rate("product-tcp-rfc5424"), rate("product-tcp-2-replicas")) {
        // What a second replica ran into: the machine's busy share in both scenarios.
        let busy = |name: &str| median_of(name, |s| s.machine_busy).unwrap_or(f64::NAN) * 100.0;
        println!(
            "{:<44} {:>6.2}  (machine {:.0} % busy with 2 replicas, {:.0} % with one)",
            "scale-out: 2 replicas / 1 (≥ 1.8; 2 cores here)",
            two / one,
            busy("product-tcp-2-replicas"),
            busy("product-tcp-rfc5424"),
        );
    }
    if let (Some(one), Some(four)) = (rate("product-tcp-rfc5424"), rate("product-fanout-4")) {
        println!(
            "{:<44} {:>6.2}",
            "fan-out cost: 1 dest rate / 4-dest rate (≤ 2)",
            one / four
        );
    }
    // The rate ratio also carries the harness: its receivers count 4 × the frames on the same
    // cores. The forwarder's own cost is its CPU per input event.
    let cpu = |name: &str| median_of(name, |s| s.cpu_us_per_event);
    if let (Some(one), Some(four)) = (cpu("product-tcp-rfc5424"), cpu("product-fanout-4")) {
        println!(
            "{:<44} {:>6.2}",
            "fan-out CPU: 4-dest / 1 dest µs per event (≤ 2)",
            four / one
        );
    }
}
