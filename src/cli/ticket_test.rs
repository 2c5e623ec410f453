//! `ticket-test TICKET -c FILE`: creates one test ticket ("티켓 발행 테스트") and prints its key
//! and URL, or the system's error.

use std::path::Path;
use std::process::ExitCode;

use super::{EXIT_CONFIG, EXIT_RUNTIME};

pub(super) async fn main(path: &Path, name: &str) -> ExitCode {
    let cfg = match super::load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(ticket) = cfg.ticket(name) else {
        let known: Vec<&str> = cfg.ticket.iter().map(|t| t.name.as_str()).collect();
        eprintln!(
            "error: no [[ticket]] named {name:?} in {} (known: {known:?})",
            path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    match crate::ticket::test_ticket(ticket).await {
        Ok(created) => {
            println!("{}: created {} {}", ticket.name, created.key, created.url);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", ticket.name);
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
