//! `check -c FILE`: validate, summarise, exit 2 on error.

use std::path::Path;
use std::process::ExitCode;

use super::EXIT_CONFIG;
use crate::compliance::Compliance;
use crate::config;

pub(super) fn main(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            // The mapping's standards and control ids are checked here too (compliance.md).
            let mapping = &cfg.compliance.mapping_file;
            if let Err(e) = Compliance::load(mapping, cfg.compliance.mode) {
                eprintln!("{}: invalid configuration", path.display());
                for line in e.errors() {
                    eprintln!("error: {line}");
                }
                return ExitCode::from(EXIT_CONFIG);
            }
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
