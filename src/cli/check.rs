//! `check -c FILE`: validate, summarise, exit 2 on error.

use std::path::Path;
use std::process::ExitCode;

use super::EXIT_CONFIG;
use crate::config;

pub(super) fn main(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            print!("{}", cfg.summary());
            for w in cfg.warnings() {
                println!("warning: {w}");
            }
            println!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: invalid configuration", path.display());
            for line in e.errors() {
                eprintln!("error: {line}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
