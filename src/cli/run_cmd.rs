//! `run -c FILE`: the service, with the admin listener, until SIGTERM/SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use super::EXIT_RUNTIME;
use crate::config::Config;
use crate::source::embedded::EmbeddedKafka;

pub(super) async fn main(path: PathBuf) -> ExitCode {
    let mut cfg = match super::load_config(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in cfg.warnings() {
        tracing::warn!(warning = %w, "Configuration warning.");
    }
    // Kept alive for the whole run: `brokers = "embedded"` is served from this process.
    let _embedded = if cfg.kafka.is_embedded() {
        match start_embedded(&mut cfg) {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("error: starting the embedded Kafka: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    } else {
        None
    };
    crate::malloc::collect_when_idle();
    match crate::app::serve(cfg, crate::shutdown::on_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Starts an in-process Kafka with the configured topics and points `cfg` at it.
///
/// # Errors
/// When the mock cluster cannot start.
pub fn start_embedded(cfg: &mut Config) -> rdkafka::error::KafkaResult<EmbeddedKafka> {
    let k = &cfg.kafka;
    let mut topics: Vec<(&str, i32)> = k.topics.iter().map(|t| (t.as_str(), 3)).collect();
    topics.push((&k.dead_letter_topic, 1));
    topics.push((&k.ticket_history_topic, 1));
    // The mock cluster cannot create topics on request: make each destination's retry topic now.
    let retry: Vec<String> = cfg
        .syslog
        .iter()
        .map(|d| crate::pipeline::park::retry_topic_name(&k.retry_topic, &d.name))
        .collect();
    topics.extend(retry.iter().map(|t| (t.as_str(), 1)));
    let kafka = EmbeddedKafka::start(&topics)?;
    tracing::warn!(
        bootstrap = %kafka.bootstrap_servers(),
        "Using an embedded in-process Kafka (demo only; its data is lost at exit)."
    );
    cfg.kafka.brokers = kafka.bootstrap_servers();
    Ok(kafka)
}
