//! `plura-forwarder check` output and non-fatal warnings.

use std::fmt::Write as _;

use super::validate::protocol_name;
use super::{ComplianceMode, Config, Kind, SecretSource};
use crate::event::Field;
use crate::render::settings::{framing_name, Format};

const fn format_name(f: Format) -> &'static str {
    match f {
        Format::Rfc3164 => "rfc3164",
        Format::Rfc5424 => "rfc5424",
        Format::Rfc5425 => "rfc5425",
        Format::Cef => "cef",
    }
}

/// Librdkafka properties the forwarder sets after the user's (see `source::consumer_config`).
const FORCED_PROPERTIES: [&str; 3] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.commit.interval.ms",
];

pub(super) fn warnings(c: &Config) -> Vec<String> {
    let mut w = Vec::new();
    let k = &c.kafka;
    if k.is_embedded() {
        w.push("kafka: brokers = \"embedded\" starts an in-process Kafka for demos; nothing is durable".into());
    }
    for t in k.topic_log_types.keys() {
        if !k.topics.contains(t) {
            w.push(format!(
                "kafka.topic_log_types: {t:?} is not in kafka.topics; the binding is unused"
            ));
        }
    }
    for p in FORCED_PROPERTIES {
        if k.properties.contains_key(p) {
            w.push(format!(
                "kafka.properties: {p:?} is ignored; at-least-once delivery sets it"
            ));
        }
    }
    if c.forwarder.hostname.is_empty() {
        w.push(
            "forwarder: hostname: this machine's host name is unknown; headers carry \"-\"".into(),
        );
    }
    if c.admin.token_env.is_empty() {
        w.push("admin: token_env is empty: /api is off".into());
    } else if std::env::var_os(&c.admin.token_env).is_none_or(|v| v.is_empty()) {
        w.push(format!(
            "admin: token_env: {} is not set: /api is off",
            c.admin.token_env
        ));
    }
    if let Ok(a) = c.admin.listen.parse::<std::net::SocketAddr>() {
        if !a.ip().is_loopback() {
            w.push(format!(
                "admin: listen {}: /metrics and /healthz are reachable from the network without a token",
                c.admin.listen
            ));
        }
    }
    if c.syslog.is_empty() {
        w.push("config: no [[syslog]] destination: events only feed tickets".into());
    }
    for (i, d) in c.syslog.iter().enumerate() {
        let pre = format!("syslog[{i}] {:?}", d.name);
        for r in d.render.warnings() {
            w.push(format!("{pre}: {r}"));
        }
        if d.select.detect.is_empty() && d.select.defense.is_empty() && d.select.usage.is_empty() {
            w.push(format!(
                "{pre}: detect, defense and usage are all \"none\": it receives nothing"
            ));
        }
        if let Some(t) = &d.tls {
            if !t.verify {
                w.push(format!("{pre}: tls.verify = false: the server certificate is not checked (lab use only)"));
            }
        }
        for f in &d.filter.fields {
            if Field::from_name(&f.field).is_none() {
                w.push(format!(
                    "{pre}: filter.fields.{}: not an event.md field; only events that carry it can pass",
                    f.field
                ));
            }
        }
        if let Kind::Group(g) = &d.kind {
            if !d.filter.groups.is_empty() && !d.filter.groups.contains(g) {
                w.push(format!("{pre}: filter.groups does not hold the destination's group {g:?}: it receives nothing"));
            }
        }
    }
    for (i, t) in c.ticket.iter().enumerate() {
        let pre = format!("ticket[{i}] {:?}", t.name);
        if t.url.starts_with("http://") {
            let host = t.url["http://".len()..]
                .split(['/', ':'])
                .next()
                .unwrap_or("");
            if !matches!(host, "localhost" | "127.0.0.1" | "[") {
                w.push(format!(
                    "{pre}: url is http://: the auth key travels unencrypted"
                ));
            }
        }
        if let SecretSource::Env(v) = &t.auth {
            if std::env::var_os(v).is_none_or(|x| x.is_empty()) {
                w.push(format!(
                    "{pre}: auth_key_env: {v} is not set; tickets will fail until it is"
                ));
            }
        }
    }
    w
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub(super) fn summary(c: &Config) -> String {
    let mut s = String::new();
    let k = &c.kafka;
    if let Some(p) = &c.path {
        let _ = writeln!(s, "config: {}", p.display());
    }
    let _ = writeln!(
        s,
        "kafka: brokers {} group {} topics [{}]",
        k.brokers,
        k.group_id,
        k.topics.join(", ")
    );
    let _ = writeln!(
        s,
        "  dead letters {}  retry {}.<destination>  ticket history {}  max event {} bytes",
        k.dead_letter_topic, k.retry_topic, k.ticket_history_topic, k.max_event_bytes
    );
    for (t, l) in &k.topic_log_types {
        let _ = writeln!(s, "  topic {t} is bound to log type {l}");
    }
    if !k.properties.is_empty() {
        let keys: Vec<_> = k.properties.keys().map(String::as_str).collect();
        let _ = writeln!(s, "  properties: {}", keys.join(", "));
    }
    let f = &c.forwarder;
    let host = if f.hostname.is_empty() {
        "-"
    } else {
        &f.hostname
    };
    let _ = writeln!(
        s,
        "forwarder: hostname {host} app_name {} queue {} events, batch {} events / {} bytes / {} ms, park after {} ms",
        f.app_name, f.queue_events, f.batch_max_events, f.batch_max_bytes, f.batch_linger_ms, f.park_after_ms
    );
    let _ = writeln!(
        s,
        "admin: listen {} token env {}",
        c.admin.listen, c.admin.token_env
    );
    let mode = match c.compliance.mode {
        ComplianceMode::Registered => "registered",
        ComplianceMode::All => "all",
    };
    let _ = writeln!(
        s,
        "compliance: mapping {} mode {mode}",
        c.compliance.mapping_file.display()
    );
    let _ = writeln!(s, "destinations: {}", c.syslog.len());
    for d in &c.syslog {
        let r = &d.render;
        let kind = match &d.kind {
            Kind::Representative => "representative".to_owned(),
            Kind::Group(g) => format!("group {g}"),
        };
        let framing = r.framing.map(framing_name).unwrap_or("datagram");
        let _ = writeln!(
            s,
            "  {}: {kind}, {} {} to {} (framing {framing}, max {} bytes, include_raw_log {}, include_compliance {})",
            d.name,
            protocol_name(r.protocol),
            format_name(r.format),
            d.address,
            r.max_message_bytes,
            yes(r.include_raw_log),
            yes(r.include_compliance),
        );
        let _ = writeln!(s, "    select: {}", d.select.describe());
        let _ = writeln!(s, "    filter: {}", d.filter.describe());
        if let Some(t) = &d.tls {
            let _ = writeln!(
                s,
                "    tls: server_name {} verify {} ca {} client cert {}",
                t.server_name,
                yes(t.verify),
                t.ca_file
                    .as_ref()
                    .map_or("system roots".into(), |p| p.display().to_string()),
                yes(t.cert_file.is_some()),
            );
        }
    }
    let _ = writeln!(s, "tickets: {}", c.ticket.len());
    for t in &c.ticket {
        let _ = writeln!(
            s,
            "  {}: {} {} at {} project {} issue type {} (auth {}{}), {}/min burst {}, dedup {} s on [{}]",
            t.name,
            t.system.name(),
            t.version,
            t.url,
            t.project,
            t.issue_type,
            t.auth,
            t.user.as_ref().map_or(String::new(), |u| format!(", user {u}")),
            t.rate_per_minute,
            t.burst,
            t.dedup_window_s,
            t.dedup_key.join(", "),
        );
        match &t.when {
            None => {
                let _ = writeln!(s, "    when: manual tickets only");
            }
            Some(w) => {
                let _ = writeln!(
                    s,
                    "    when: {} filter: {}",
                    w.select.describe(),
                    w.filter.describe()
                );
            }
        }
    }
    let warnings = warnings(c);
    if !warnings.is_empty() {
        let _ = writeln!(s, "warnings: {}", warnings.len());
        for w in warnings {
            let _ = writeln!(s, "  {w}");
        }
    }
    s
}
