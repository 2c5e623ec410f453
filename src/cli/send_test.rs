//! `send-test DESTINATION -c FILE`: one test message to a `[[syslog]]` destination, through the
//! same sink code as the service; prints the outcome (exit 0) or the error (exit 1).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::{EXIT_CONFIG, EXIT_RUNTIME};
use crate::render::settings::Protocol;

pub(super) async fn main(path: &Path, name: &str) -> ExitCode {
    let cfg = match super::load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(dest) = cfg.destination(name) else {
        let names: Vec<&str> = cfg.syslog.iter().map(|d| d.name.as_str()).collect();
        eprintln!(
            "error: no [[syslog]] destination named {name:?} in {} (destinations: {})",
            path.display(),
            names.join(", ")
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    match crate::admin::send_test(dest, Duration::from_secs(10)).await {
        Ok(sent) => {
            let protocol = match dest.render.protocol {
                Protocol::Udp => "udp",
                Protocol::Tcp => "tcp",
                Protocol::Tls => "tls",
            };
            println!(
                "{name}: test message sent to {} ({protocol}), {} bytes, acknowledged in {} ms",
                dest.address,
                sent.bytes,
                sent.elapsed.as_millis()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {name}: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
