//! `demo`: the whole product on one machine, nothing to install. An in-process Kafka (the
//! librdkafka mock cluster), sample events of every log type and category plus a few broken
//! ones, four local receivers (TCP, UDP, TLS with a CA made on the spot, TCP with LF framing);
//! prints what each receiver got and a summary.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::EXIT_RUNTIME;
use crate::config::{self, Config};
use crate::event::{decode, DecodeOptions};
use crate::pipeline::{self, RunOptions};
use crate::receiver::{Receiver, Split};
use crate::route::{Decision, Router};
use crate::sample;
use crate::source::embedded::EmbeddedKafka;

/// Options of `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoOptions {
    /// Sample events to produce (cycling through all 24 log type / category pairs).
    #[arg(long, default_value_t = 240)]
    pub events: usize,
    /// Frames to print per receiver.
    #[arg(long, default_value_t = 2)]
    pub show: usize,
    /// Seconds to wait for every routed event to arrive.
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
}

/// The demo's configuration; `{…}` are filled with the embedded broker and receiver addresses.
const DEMO_TOML: &str = r#"
[kafka]
brokers = "{brokers}"
group_id = "plura-forwarder-demo"
[kafka.properties]
"session.timeout.ms" = "6000"

[forwarder]
hostname = "demo-forwarder"
commit_interval_ms = 200
shutdown_grace_s = 5

[admin]
listen = "127.0.0.1:0"

# The representative SIEM: every log, RFC 5424 over TCP, octet-counted.
[[syslog]]
name = "soc-siem"
kind = "representative"
protocol = "tcp"
format = "rfc5424"
msgid = "category"
address = "{soc}"

# Group acme's SIEM: its detect and defense logs as CEF over UDP.
[[syslog]]
name = "acme-cef"
kind = "group"
group = "acme"
protocol = "udp"
format = "cef"
address = "{acme}"

# Group globex's SIEM: RFC 5425 over TLS, verified against a CA made for the demo.
[[syslog]]
name = "globex-tls"
kind = "group"
group = "globex"
protocol = "tls"
format = "rfc5425"
address = "{globex}"
[syslog.tls]
ca_file = "{ca_file}"
server_name = "127.0.0.1"

# An archive that wants only risky detections, RFC 3164 over TCP, one line per event.
[[syslog]]
name = "archive-3164"
kind = "representative"
protocol = "tcp"
format = "rfc3164"
framing = "lf"
newline = "space"
defense = "none"
usage = "none"
address = "{archive}"
[syslog.filter]
min_risk = 5
"#;

/// Broken messages the demo sends to show dead-lettering.
const BROKEN: [&str; 3] = [
    "{not json",
    r#"{"logType":"detect","category":"web","filterRiskLevel":{"nested":true}}"#,
    r#"{"logType":"detect","category":"teleport"}"#,
];

/// What the demo saw, per destination and for the dead-letter topic.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// (destination, routed, received).
    pub destinations: Vec<(String, usize, usize)>,
    /// Broken messages sent and dead letters read back.
    pub invalid: (usize, usize),
}

impl DemoReport {
    /// Whether every routed event arrived and every broken one was dead-lettered.
    pub fn complete(&self) -> bool {
        self.destinations.iter().all(|(_, want, got)| got == want)
            && self.invalid.0 == self.invalid.1
    }
}

pub(super) async fn main(opts: DemoOptions) -> ExitCode {
    match run(&opts).await {
        Ok(report) if report.complete() => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("error: not every event arrived in time");
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Runs the demo and prints what arrived.
///
/// # Errors
/// When a local socket, the embedded Kafka or the pipeline cannot start.
pub async fn run(opts: &DemoOptions) -> anyhow::Result<DemoReport> {
    let certs = tempfile::tempdir()?;
    let (ca_pem, server) = crate::receiver::loopback_tls()?;
    let ca_file = certs.path().join("demo-ca.pem");
    std::fs::write(&ca_file, ca_pem)?;
    let receivers = [
        ("soc-siem", Receiver::tcp(Split::OctetCounting).await?),
        ("acme-cef", Receiver::udp().await?),
        (
            "globex-tls",
            Receiver::tls(Split::OctetCounting, server).await?,
        ),
        ("archive-3164", Receiver::tcp(Split::Byte(b'\n')).await?),
    ];
    let kafka = EmbeddedKafka::start(&[
        ("plura.detect", 3),
        ("plura.defense", 3),
        ("plura.usage", 3),
        ("plura.forwarder.dlq", 1),
    ])?;
    let toml = DEMO_TOML
        .replace("{brokers}", &kafka.bootstrap_servers())
        .replace("{soc}", &receivers[0].1.addr().to_string())
        .replace("{acme}", &receivers[1].1.addr().to_string())
        .replace("{globex}", &receivers[2].1.addr().to_string())
        .replace("{ca_file}", &ca_file.display().to_string())
        .replace("{archive}", &receivers[3].1.addr().to_string());
    let cfg = config::from_toml_str(&toml).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;

    let want = produce(&cfg, opts.events).await?;
    println!(
        "Produced {} sample events ({} log type/category pairs, 3 groups) and {} broken messages.\n",
        opts.events,
        crate::event::ALL_PAIRS.len(),
        BROKEN.len()
    );

    let stop = tokio_util::sync::CancellationToken::new();
    let run = pipeline::run(
        cfg.clone(),
        RunOptions {
            shutdown: stop.clone(),
            ..RunOptions::default()
        },
    );
    let wait = async {
        for ((_, r), n) in receivers.iter().zip(&want) {
            r.wait_for(*n, Duration::from_secs(opts.timeout_s)).await;
        }
        // Give a late duplicate or a stray frame the chance to show up before counting.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    };
    let (result, ()) = tokio::join!(run, wait);
    result?;

    let dead = count_dead_letters(&cfg, BROKEN.len()).await;
    let mut report = DemoReport {
        invalid: (BROKEN.len(), dead),
        ..DemoReport::default()
    };
    for (((name, r), n), d) in receivers.iter().zip(&want).zip(&cfg.syslog) {
        let frames = r.frames();
        println!(
            "== {name}: {} over {} to {} — {} frames",
            format!("{:?}", d.render.format).to_lowercase(),
            format!("{:?}", d.render.protocol).to_lowercase(),
            r.addr(),
            frames.len()
        );
        for f in frames.iter().take(opts.show) {
            println!("  {}", printable(f));
        }
        println!();
        report
            .destinations
            .push(((*name).to_owned(), *n, frames.len()));
    }
    println!("Summary");
    println!("  {:<14} {:>8} {:>9}", "destination", "routed", "received");
    for (name, want, got) in &report.destinations {
        let mark = if got == want { "ok" } else { "MISSING" };
        println!("  {name:<14} {want:>8} {got:>9}  {mark}");
    }
    println!(
        "  broken messages {} → dead-letter topic {}",
        report.invalid.0, report.invalid.1
    );
    drop(kafka);
    Ok(report)
}

/// Produces the sample and broken events; returns how many each destination should get.
async fn produce(cfg: &Config, n: usize) -> anyhow::Result<Vec<usize>> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("linger.ms", "5")
        .create()?;
    let router = Router::new(&cfg.syslog).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut want = vec![0; cfg.syslog.len()];
    let mut decisions = Vec::new();
    let mut sends = Vec::with_capacity(n);
    for (seq, ev) in sample::events(n, 200) {
        let payload = serde_json::to_vec(&ev)?;
        let group = sample::group_of(seq);
        let parsed = decode(&payload, Some(group.as_bytes()), &DecodeOptions::default())
            .map_err(|e| anyhow::anyhow!("sample event {seq}: {e}"))?;
        router.route(&parsed, &mut decisions);
        for (w, d) in want.iter_mut().zip(&decisions) {
            *w += usize::from(*d == Decision::Routed);
        }
        let topic = format!("plura.{}", parsed.log_type.name());
        let record = FutureRecord::to(&topic)
            .payload(payload.as_slice())
            .key(group.as_bytes());
        sends.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))?,
        );
    }
    for broken in BROKEN {
        let record = FutureRecord::<[u8], [u8]>::to("plura.detect").payload(broken.as_bytes());
        sends.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))?,
        );
    }
    for s in sends {
        s.await?
            .map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))?;
    }
    Ok(want)
}

async fn count_dead_letters(cfg: &Config, want: usize) -> usize {
    let consumer: StreamConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", "plura-forwarder-demo-dlq")
        .set("auto.offset.reset", "earliest")
        .create()
    {
        Ok(c) => c,
        Err(_) => return 0,
    };
    if consumer.subscribe(&[&cfg.kafka.dead_letter_topic]).is_err() {
        return 0;
    }
    let mut seen = 0;
    while seen < want {
        match tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await {
            Ok(Ok(_)) => seen += 1,
            _ => break,
        }
    }
    seen
}

/// A frame as one readable line: control bytes shown as `\xNN`.
fn printable(frame: &[u8]) -> String {
    let text = String::from_utf8_lossy(frame);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}
