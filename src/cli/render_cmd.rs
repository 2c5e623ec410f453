//! `render`: JSON lines on stdin → the exact wire bytes (framing included) on stdout.
//!
//! Every rendering key of a `[[syslog]]` table is a flag of the same name with dashes, so a
//! SIEM team can reproduce any destination's output offline, deterministically with `--now`.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use bytes::BytesMut;
use clap::Args;
use serde::Deserialize;

use super::{EXIT_CONFIG, EXIT_RUNTIME};
use crate::event::{decode, DecodeOptions};
use crate::render::settings::{Protocol, SettingsInput};
use crate::render::{RenderContext, RenderSettings, Rendered, Renderer};

/// How a flag's text becomes a TOML value for [`SettingsInput`].
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Int,
    /// facility / severity: a number when it parses as one, else a name.
    NameOrNumber,
}

macro_rules! render_flags {
    ($($field:ident : $kind:ident, $help:literal;)*) => {
        /// The flags of `render`: every rendering key of a `[[syslog]]` table (config.md).
        #[derive(Debug, Clone, Default, Args)]
        pub struct RenderFlags {
            $(#[doc = $help] #[arg(long)] pub $field: Option<String>,)*
            /// HOSTNAME; `-` writes the NILVALUE. Default: this machine's host name.
            #[arg(long)]
            pub hostname: Option<String>,
            /// APP-NAME (RFC 5424) / TAG (RFC 3164).
            #[arg(long, default_value = "Plura")]
            pub app_name: String,
            /// The send time as RFC 3339 (default: the clock), for deterministic output.
            #[arg(long)]
            pub now: Option<String>,
        }

        impl RenderFlags {
            /// The rendering keys given, as a TOML table in config spelling.
            fn table(&self) -> Result<toml::Table, String> {
                let mut t = toml::Table::new();
                $(if let Some(v) = &self.$field {
                    t.insert(stringify!($field).to_owned(), value(stringify!($field), v, Kind::$kind)?);
                })*
                Ok(t)
            }
        }
    };
}

render_flags! {
    format: Str, "rfc3164 | rfc5424 | rfc5425 | cef (default rfc5424).";
    protocol: Str, "udp | tcp | tls (default tcp): decides framing and size defaults.";
    newline: Str, "lf | ascii | space: between title and record.";
    framing: Str, "tcp/tls only: octet-counting | lf | crlf | nul.";
    facility: NameOrNumber, "kern..local7 or 0..23.";
    severity: NameOrNumber, "emerg..debug or 0..7.";
    tz: Str, "local, Z, or an offset like +09:00.";
    frac_digits: Int, "RFC 5424 fraction digits, 0..6.";
    bom: Str, "auto | always | never.";
    procid: Str, "RFC 5424 PROCID.";
    msgid: Str, "RFC 5424 MSGID (category = logType.category).";
    sd_id: Str, "RFC 5424 SD-ID: a name, @ and an IANA enterprise number (plura@32473).";
    tag_colon: Bool, "true: RFC 3164 'TAG: '.";
    cef_header: Str, "cef only: rfc3164 | rfc5424 | none.";
    cef_tag: Bool, "cef only: TAG before CEF:0 in an rfc3164 prefix.";
    cef_labels: Bool, "cef only: write csNLabel / cnNLabel keys.";
    cef_time: Str, "cef only: plura | epoch_ms.";
    include_raw_log: Bool, "append logOrigin.";
    include_compliance: Bool, "add the event's compliance controls.";
    max_message_bytes: Int, "SYSLOG-MSG limit in bytes (>= 480).";
    on_oversize: Str, "truncate | drop.";
}

fn value(key: &str, v: &str, kind: Kind) -> Result<toml::Value, String> {
    let flag = key.replace('_', "-");
    Ok(match kind {
        Kind::Str => toml::Value::String(v.to_owned()),
        Kind::Bool => match v {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            _ => return Err(format!("--{flag} {v:?}: expected true or false")),
        },
        Kind::Int => v
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("--{flag} {v:?}: expected a whole number"))?,
        Kind::NameOrNumber => match v.parse::<i64>() {
            Ok(n) => toml::Value::Integer(n),
            Err(_) => toml::Value::String(v.to_owned()),
        },
    })
}

impl RenderFlags {
    /// The checked settings these flags describe.
    ///
    /// # Errors
    /// A message naming the flag and the reason (a config error: exit 2).
    pub fn settings(&self) -> Result<RenderSettings, String> {
        let input = SettingsInput::deserialize(toml::Value::Table(self.table()?))
            .map_err(|e| e.to_string().trim().to_owned())?;
        let hostname = match self.hostname.as_deref() {
            Some("-") => None,
            Some(h) => Some(h.to_owned()),
            None => hostname::get().ok().and_then(|h| h.into_string().ok()),
        };
        input
            .build(hostname, self.app_name.clone(), Protocol::Tcp)
            .map_err(|e| e.to_string())
    }

    /// `--now` in µs since the epoch, if given.
    ///
    /// # Errors
    /// When it is not RFC 3339.
    pub fn now_us(&self) -> Result<Option<i64>, String> {
        self.now
            .as_deref()
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.timestamp_micros())
                    .map_err(|e| format!("--now {s:?}: not RFC 3339: {e}"))
            })
            .transpose()
    }
}

pub(super) fn main(flags: &RenderFlags) -> ExitCode {
    let (settings, now) = match flags.settings().and_then(|s| Ok((s, flags.now_us()?))) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for w in settings.warnings() {
        eprintln!("warning: {w}");
    }
    match render_stream(
        &Renderer::new(settings),
        now,
        io::stdin().lock(),
        io::stdout().lock(),
    ) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_RUNTIME),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Renders every line of `input` to `out`; reports bad lines on stderr with their number.
/// Returns how many lines failed.
///
/// # Errors
/// Reading stdin or writing stdout failed.
pub fn render_stream(
    renderer: &Renderer,
    now_us: Option<i64>,
    input: impl BufRead,
    out: impl Write,
) -> io::Result<usize> {
    let mut out = io::BufWriter::new(out);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut failed = 0;
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let now = now_us.unwrap_or_else(crate::pipeline::now_us);
        let mut ev = match decode(line, None, &DecodeOptions::default()) {
            Ok(ev) => ev,
            Err(e) => {
                eprintln!("line {}: {} ({})", i + 1, e, e.reason());
                failed += 1;
                continue;
            }
        };
        // As if the message had just been produced: the event time when registerDate is absent.
        ev.kafka_timestamp_ms = Some(now.div_euclid(1000));
        buf.clear();
        match renderer.render(&ev, &RenderContext { now_us: now }, &mut buf) {
            Rendered::Oversize => {
                eprintln!(
                    "line {}: the message is over max_message_bytes {} and on_oversize = drop",
                    i + 1,
                    renderer.settings().max_message_bytes
                );
                failed += 1;
            }
            Rendered::Ok | Rendered::Truncated => out.write_all(&buf)?,
        }
    }
    out.flush()?;
    Ok(failed)
}
