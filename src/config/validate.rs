//! Raw tables → checked [`Config`], collecting every error.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use regex::Regex;

use super::raw::{
    RawAdmin, RawCompliance, RawConfig, RawFilter, RawForwarder, RawKafka, RawSyslog, RawTicket,
};
use super::{
    AdminConfig, CategorySet, ComplianceConfig, ComplianceMode, Config, ConfigError, FieldRegex,
    FilterConfig, ForwarderConfig, KafkaConfig, Kind, SecretSource, Selection, SyslogConfig,
    TicketConfig, TicketSystem, TicketWhen, TlsConfig, TlsVersion,
};
use crate::event::{Category, Field, LogType};
use crate::render::settings::{Protocol, SettingsInput};

/// Error collector.
#[derive(Default)]
struct Errs(Vec<String>);

impl Errs {
    fn push(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }
}

pub(super) fn build(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut e = Errs::default();
    let kafka = kafka(&mut e, raw.kafka.unwrap_or_default());
    let forwarder = forwarder(&mut e, raw.forwarder.unwrap_or_default());
    let admin = admin(&mut e, raw.admin.unwrap_or_default());
    let compliance = compliance(&mut e, raw.compliance.unwrap_or_default());
    if raw.syslog.is_empty() && raw.ticket.is_empty() {
        e.push("config: no [[syslog]] or [[ticket]] table: there is nothing to forward to");
    }
    let hostname = match forwarder.hostname.as_str() {
        "" | "-" => None,
        h => Some(h.to_owned()),
    };
    let names: Vec<_> = raw.syslog.iter().map(|d| d.name.clone()).collect();
    let mut syslog = Vec::with_capacity(raw.syslog.len());
    for (i, d) in raw.syslog.into_iter().enumerate() {
        if let Some(d) = destination(&mut e, i, d, &hostname, &forwarder.app_name) {
            syslog.push(d);
        }
    }
    duplicates(&mut e, "syslog", &names);
    let names: Vec<_> = raw.ticket.iter().map(|t| t.name.clone()).collect();
    let mut ticket = Vec::with_capacity(raw.ticket.len());
    for (i, t) in raw.ticket.into_iter().enumerate() {
        if let Some(t) = ticket_table(&mut e, i, t) {
            ticket.push(t);
        }
    }
    duplicates(&mut e, "ticket", &names);
    if !e.0.is_empty() {
        return Err(ConfigError(e.0));
    }
    Ok(Config {
        kafka,
        forwarder,
        admin,
        syslog,
        ticket,
        compliance,
        path: None,
    })
}

fn duplicates(e: &mut Errs, table: &str, names: &[Option<String>]) {
    for (i, n) in names.iter().enumerate() {
        let Some(n) = n else { continue };
        if let Some(first) = names[..i].iter().position(|m| m.as_ref() == Some(n)) {
            e.push(format!(
                "{table}[{i}] {n:?}: name: already used by {table}[{first}]"
            ));
        }
    }
}

/// `min..` checked integer with a default.
fn int(e: &mut Errs, table: &str, key: &str, v: Option<i64>, default: i64, min: i64) -> u64 {
    match v {
        None => default as u64,
        Some(n) if n < min => {
            e.push(format!("{table}: {key}: must be at least {min}, got {n}"));
            default as u64
        }
        Some(n) => n as u64,
    }
}

/// Kafka topic names: `[a-zA-Z0-9._-]{1,249}`.
fn topic_ok(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn env_name_ok(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Keys the forwarder sets itself from other config keys.
const OWNED_PROPERTIES: [(&str, &str); 2] = [
    ("bootstrap.servers", "kafka.brokers"),
    ("group.id", "kafka.group_id"),
];

fn kafka(e: &mut Errs, r: RawKafka) -> KafkaConfig {
    const T: &str = "kafka";
    let brokers = r.brokers.unwrap_or_else(|| "127.0.0.1:9092".into());
    if brokers.trim().is_empty() {
        e.push("kafka: brokers: must not be empty (host:port list, or \"embedded\")");
    } else if brokers != "embedded" {
        for b in brokers.split(',').map(str::trim) {
            if let Err(why) = broker_ok(b) {
                e.push(format!("kafka: brokers: {b:?}: {why}"));
            }
        }
    }
    let group_id = r.group_id.unwrap_or_else(|| "plura-forwarder".into());
    if group_id.trim().is_empty() {
        e.push("kafka: group_id: must not be empty");
    }
    let topics = r.topics.unwrap_or_else(|| {
        ["plura.detect", "plura.defense", "plura.usage"]
            .map(String::from)
            .to_vec()
    });
    if topics.is_empty() {
        e.push("kafka: topics: must not be empty");
    }
    for (i, t) in topics.iter().enumerate() {
        if !topic_ok(t) {
            e.push(format!("kafka: topics: {t:?}: not a valid Kafka topic name (1 to 249 of letters, digits, '.', '_', '-')"));
        } else if topics[..i].contains(t) {
            e.push(format!("kafka: topics: {t:?}: listed twice"));
        }
    }
    let mut topic_key = |key: &str, v: Option<String>, default: &str| {
        let v = v.unwrap_or_else(|| default.into());
        if !topic_ok(&v) {
            e.push(format!("kafka: {key}: {v:?}: not a valid Kafka topic name (1 to 249 of letters, digits, '.', '_', '-')"));
        } else if topics.contains(&v) {
            e.push(format!(
                "kafka: {key}: {v:?} is also a consumed topic; the forwarder would read its own output"
            ));
        }
        v
    };
    let dead_letter_topic = topic_key(
        "dead_letter_topic",
        r.dead_letter_topic,
        "plura.forwarder.dlq",
    );
    let retry_topic = topic_key("retry_topic", r.retry_topic, "plura.forwarder.retry");
    let ticket_history_topic = topic_key(
        "ticket_history_topic",
        r.ticket_history_topic,
        "plura.forwarder.tickets",
    );
    let max_event_bytes = int(e, T, "max_event_bytes", r.max_event_bytes, 1 << 20, 1) as usize;
    let topic_log_types = r.topic_log_types.unwrap_or_default();
    for (t, l) in &topic_log_types {
        if LogType::from_name(l).is_none() {
            e.push(format!(
                "kafka.topic_log_types: {t:?}: {l:?} is not a log type (detect, defense, usage)"
            ));
        }
    }
    let mut properties = BTreeMap::new();
    for (k, v) in r.properties.unwrap_or_default() {
        if let Some((_, instead)) = OWNED_PROPERTIES.iter().find(|(p, _)| *p == k) {
            e.push(format!("kafka.properties: {k:?}: set {instead} instead"));
            continue;
        }
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                e.push(format!(
                    "kafka.properties: {k:?}: expected a string, number or boolean, got {}",
                    other.type_str()
                ));
                continue;
            }
        };
        properties.insert(k, s);
    }
    KafkaConfig {
        brokers,
        group_id,
        topics,
        dead_letter_topic,
        retry_topic,
        ticket_history_topic,
        max_event_bytes,
        topic_log_types,
        properties,
    }
}

/// One bootstrap broker as librdkafka takes it: `[proto://]host[:port]` (port default 9092).
fn broker_ok(b: &str) -> Result<(), String> {
    let hp = b.split_once("://").map_or(b, |(_, r)| r);
    let bracketed_without_port = hp.starts_with('[') && hp.ends_with(']');
    let has_port = if hp.starts_with('[') {
        !bracketed_without_port
    } else {
        hp.contains(':')
    };
    if has_port {
        split_address(hp).map(|_| ())
    } else {
        split_address(&format!("{hp}:9092")).map(|_| ())
    }
}

/// This machine's host name, or `""` when it cannot be found out.
fn machine_hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

fn forwarder(e: &mut Errs, r: RawForwarder) -> ForwarderConfig {
    const T: &str = "forwarder";
    let hostname = match r.hostname {
        None => machine_hostname(),
        Some(h) if h.is_empty() => machine_hostname(),
        Some(h) => {
            if h.chars().any(|c| c.is_whitespace() || c.is_control()) {
                e.push(format!(
                    "forwarder: hostname {h:?}: must not hold spaces or control characters"
                ));
            }
            h
        }
    };
    let app_name = r.app_name.unwrap_or_else(|| "Plura".into());
    if app_name.trim().is_empty() {
        e.push("forwarder: app_name: must not be empty");
    }
    ForwarderConfig {
        hostname,
        app_name,
        queue_events: int(e, T, "queue_events", r.queue_events, 65_536, 1) as usize,
        batch_max_events: int(e, T, "batch_max_events", r.batch_max_events, 1024, 1) as usize,
        batch_max_bytes: int(e, T, "batch_max_bytes", r.batch_max_bytes, 1 << 20, 1) as usize,
        batch_linger_ms: int(e, T, "batch_linger_ms", r.batch_linger_ms, 5, 0),
        commit_interval_ms: int(e, T, "commit_interval_ms", r.commit_interval_ms, 1000, 1),
        shutdown_grace_s: int(e, T, "shutdown_grace_s", r.shutdown_grace_s, 30, 0),
        park_after_ms: int(e, T, "park_after_ms", r.park_after_ms, 1000, 1),
    }
}

fn admin(e: &mut Errs, r: RawAdmin) -> AdminConfig {
    let listen = r.listen.unwrap_or_else(|| "127.0.0.1:9464".into());
    if listen.parse::<SocketAddr>().is_err() {
        e.push(format!(
            "admin: listen {listen:?}: not a socket address (IP:port, e.g. \"127.0.0.1:9464\" or \"[::1]:9464\")"
        ));
    }
    let token_env = r
        .token_env
        .unwrap_or_else(|| "PLURA_FORWARDER_ADMIN_TOKEN".into());
    if !token_env.is_empty() && !env_name_ok(&token_env) {
        e.push(format!(
            "admin: token_env {token_env:?}: not an environment variable name (letters, digits, '_')"
        ));
    }
    AdminConfig { listen, token_env }
}

fn compliance(e: &mut Errs, r: RawCompliance) -> ComplianceConfig {
    let mapping_file = r
        .mapping_file
        .unwrap_or_else(|| "config/compliance.toml".into());
    if mapping_file.trim().is_empty() {
        e.push("compliance: mapping_file: must not be empty");
    }
    let mode = match r.mode.as_deref() {
        None | Some("registered") => ComplianceMode::Registered,
        Some("all") => ComplianceMode::All,
        Some(m) => {
            e.push(format!(
                "compliance: mode {m:?}: expected \"registered\" or \"all\""
            ));
            ComplianceMode::Registered
        }
    };
    ComplianceConfig {
        mapping_file: PathBuf::from(mapping_file),
        mode,
    }
}

/// Names used as metric labels and URL path segments.
fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Table prefix `syslog[2] "soc-b"` (without the name when there is none).
fn prefix(table: &str, i: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{table}[{i}] {n:?}"),
        None => format!("{table}[{i}]"),
    }
}

fn check_name(e: &mut Errs, pre: &str, name: Option<String>) -> String {
    match name {
        None => {
            e.push(format!(
                "{pre}: name: missing (every table needs a unique name)"
            ));
            String::new()
        }
        Some(n) if !name_ok(&n) => {
            e.push(format!(
                "{pre}: name: must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (it is a metric label and a URL path segment)"
            ));
            n
        }
        Some(n) => n,
    }
}

/// Splits `host:port` (IPv6 as `[::1]:514`), checking both parts. The host comes back
/// without brackets.
///
/// # Errors
/// The reason, e.g. `missing port`.
pub fn split_address(s: &str) -> Result<(&str, u16), String> {
    if s.is_empty() {
        return Err("empty (expected host:port)".into());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or("missing ']' after the IPv6 address")?;
        if h.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{h:?} is not an IPv6 address"));
        }
        let port = match after.strip_prefix(':') {
            Some(p) => p,
            None if after.is_empty() => return Err("missing port".into()),
            None => return Err("expected ':' and a port after ']'".into()),
        };
        (h, port)
    } else {
        let Some((h, p)) = s.rsplit_once(':') else {
            return Err("missing port".into());
        };
        if h.contains(':') {
            return Err("an IPv6 address needs brackets, e.g. [::1]:514".into());
        }
        if h.is_empty() {
            return Err("missing host".into());
        }
        if h.parse::<Ipv4Addr>().is_err() && !host_name_ok(h) {
            return Err(format!("host {h:?} is not an IP address or host name"));
        }
        (h, p)
    };
    if port.is_empty() {
        return Err("missing port".into());
    }
    match port.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok((host, n as u16)),
        Ok(n) => Err(format!("port {n} is out of range 1..65535")),
        Err(_) => Err(format!("port {port:?} is not a number")),
    }
}

fn host_name_ok(h: &str) -> bool {
    h.len() <= 253
        && h.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

/// `detect` / `defense` / `usage`: `"all"`, `"none"` or a list of that log type's categories.
fn selection(
    e: &mut Errs,
    pre: &str,
    table: &str,
    lt: LogType,
    v: Option<&toml::Value>,
    default: CategorySet,
) -> CategorySet {
    let key = format!("{table}{}", lt.name());
    let key = key.as_str();
    let names = || {
        lt.categories()
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match v {
        None => default,
        Some(toml::Value::String(s)) if s == "all" => CategorySet::all(lt),
        Some(toml::Value::String(s)) if s == "none" => CategorySet::NONE,
        Some(toml::Value::String(s)) => {
            e.push(format!(
                "{pre}: {key}: {s:?} is not \"all\" or \"none\"; categories go in a list, e.g. [{s:?}]"
            ));
            default
        }
        Some(toml::Value::Array(a)) => {
            let mut set = CategorySet::NONE;
            for item in a {
                match item.as_str() {
                    Some(s) => match Category::for_log_type(lt, s) {
                        Some(c) => set.insert(c),
                        None => e.push(format!(
                            "{pre}: {key}: unknown category {s:?} for {} logs (expected {})",
                            lt.name(),
                            names()
                        )),
                    },
                    None => e.push(format!(
                        "{pre}: {key}: list items must be category names, got {}",
                        item.type_str()
                    )),
                }
            }
            set
        }
        Some(other) => {
            e.push(format!(
                "{pre}: {key}: expected \"all\", \"none\" or a list of categories, got {}",
                other.type_str()
            ));
            default
        }
    }
}

fn non_empty_list<T>(e: &mut Errs, pre: &str, key: &str, v: Option<Vec<T>>) -> Vec<T> {
    match v {
        Some(v) if v.is_empty() => {
            e.push(format!(
                "{pre}: {key}: empty list; it would match nothing (remove the key to not filter on it)"
            ));
            v
        }
        Some(v) => v,
        None => Vec::new(),
    }
}

fn nets(e: &mut Errs, pre: &str, key: &str, v: Option<Vec<String>>) -> Vec<IpNet> {
    non_empty_list(e, pre, key, v)
        .into_iter()
        .filter_map(|s| match parse_net(&s) {
            Some(n) => Some(n),
            None => {
                e.push(format!(
                    "{pre}: {key} {s:?}: not a CIDR network or IP address (e.g. \"172.16.0.0/12\", \"10.0.0.5\", \"2001:db8::/32\")"
                ));
                None
            }
        })
        .collect()
}

/// A CIDR network or a plain address (a host network).
pub(crate) fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The keys of `[syslog.filter]` / `[ticket.when]`; `table` is `filter` or `when`.
fn filter(e: &mut Errs, pre: &str, table: &str, r: RawFilter) -> FilterConfig {
    let min_risk = match r.min_risk {
        None => None,
        Some(n @ 0..=10) => Some(n as u8),
        Some(n) => {
            e.push(format!(
                "{pre}: {table}.min_risk: {n} is out of range 0..10"
            ));
            None
        }
    };
    let key = |k: &str| format!("{table}.{k}");
    let filter_ids = non_empty_list(e, pre, &key("filter_ids"), r.filter_ids)
        .into_iter()
        .filter_map(|v| match v {
            toml::Value::String(s) if !s.is_empty() => Some(s),
            toml::Value::Integer(n) => Some(n.to_string()),
            other => {
                e.push(format!(
                    "{pre}: {table}.filter_ids: items must be non-empty strings, got {other}"
                ));
                None
            }
        })
        .collect();
    let filter_names: Vec<String> = non_empty_list(e, pre, &key("filter_names"), r.filter_names);
    if filter_names.iter().any(String::is_empty) {
        e.push(format!(
            "{pre}: {table}.filter_names: empty pattern (filterName is never empty)"
        ));
    } else if !filter_names.is_empty() {
        if let Err(err) = crate::route::glob_regex(&filter_names) {
            e.push(format!(
                "{pre}: {table}.filter_names: {}",
                regex_reason(&err)
            ));
        }
    }
    let server_ips = nets(e, pre, &key("server_ips"), r.server_ips);
    let detect_ips = nets(e, pre, &key("detect_ips"), r.detect_ips);
    let groups: Vec<String> = non_empty_list(e, pre, &key("groups"), r.groups);
    if groups.iter().any(String::is_empty) {
        e.push(format!("{pre}: {table}.groups: empty group name"));
    }
    let mut fields = Vec::new();
    for (name, pattern) in r.fields.unwrap_or_default() {
        if name.is_empty() {
            e.push(format!("{pre}: {table}.fields: empty field name"));
            continue;
        }
        match Regex::new(&pattern) {
            Ok(regex) => fields.push(FieldRegex { field: name, regex }),
            Err(err) => e.push(format!(
                "{pre}: {table}.fields.{name} {pattern:?}: {}",
                regex_reason(&err)
            )),
        }
    }
    FilterConfig {
        min_risk,
        filter_ids,
        filter_names,
        server_ips,
        detect_ips,
        groups,
        fields,
    }
}

fn destination(
    e: &mut Errs,
    i: usize,
    mut r: RawSyslog,
    hostname: &Option<String>,
    app_name: &str,
) -> Option<SyslogConfig> {
    let before = e.0.len();
    let pre = prefix("syslog", i, r.name.as_deref());
    let name = check_name(e, &pre, r.name.take());

    let kind = match (r.kind.as_deref(), r.group.take()) {
        (None | Some("representative"), None) => Kind::Representative,
        (None | Some("representative"), Some(_)) => {
            e.push(format!("{pre}: group: only for kind = \"group\""));
            Kind::Representative
        }
        (Some("group"), Some(g)) if !g.trim().is_empty() => Kind::Group(g),
        (Some("group"), _) => {
            e.push(format!("{pre}: group: required when kind = \"group\""));
            Kind::Group(String::new())
        }
        (Some(k), _) => {
            e.push(format!(
                "{pre}: kind {k:?}: expected \"representative\" or \"group\""
            ));
            Kind::Representative
        }
    };

    let address = match r.address.take() {
        None => {
            e.push(format!(
                "{pre}: address: missing (host:port, e.g. \"127.0.0.1:514\")"
            ));
            String::new()
        }
        Some(a) => {
            if let Err(why) = split_address(&a) {
                e.push(format!("{pre}: address {a:?}: {why}"));
            }
            a
        }
    };

    let input = SettingsInput {
        protocol: r.protocol,
        format: r.format,
        newline: r.newline,
        framing: r.framing,
        facility: r.facility.take(),
        severity: r.severity.take(),
        tz: r.tz.take(),
        frac_digits: r.frac_digits,
        bom: r.bom,
        procid: r.procid.take(),
        msgid: r.msgid.take(),
        sd_id: r.sd_id.take(),
        tag_colon: r.tag_colon,
        cef_header: r.cef_header,
        cef_tag: r.cef_tag,
        cef_labels: r.cef_labels,
        cef_time: r.cef_time,
        include_raw_log: r.include_raw_log,
        include_compliance: r.include_compliance,
        max_message_bytes: r.max_message_bytes,
        on_oversize: r.on_oversize,
    };
    let render = match input.build(hostname.clone(), app_name.to_owned(), Protocol::Tcp) {
        Ok(s) => Some(s),
        Err(err) => {
            e.push(format!("{pre}: {err}"));
            None
        }
    };

    let detect = selection(
        e,
        &pre,
        "",
        LogType::Detect,
        r.detect.as_ref(),
        CategorySet::all(LogType::Detect),
    );
    let defense = selection(
        e,
        &pre,
        "",
        LogType::Defense,
        r.defense.as_ref(),
        CategorySet::all(LogType::Defense),
    );
    let usage = match kind {
        Kind::Representative => selection(
            e,
            &pre,
            "",
            LogType::Usage,
            r.usage.as_ref(),
            CategorySet::all(LogType::Usage),
        ),
        Kind::Group(_) => {
            let u = selection(
                e,
                &pre,
                "",
                LogType::Usage,
                r.usage.as_ref(),
                CategorySet::NONE,
            );
            if !u.is_empty() {
                e.push(format!(
                    "{pre}: usage: must be \"none\" or absent for kind = \"group\" (group servers never receive usage logs)"
                ));
            }
            CategorySet::NONE
        }
    };
    let select = Selection {
        detect,
        defense,
        usage,
    };

    let filter = filter(e, &pre, "filter", r.filter.take().unwrap_or_default());

    let protocol = r.protocol.unwrap_or(Protocol::Tcp);
    let tls = match (protocol, r.tls.take()) {
        (Protocol::Tls, t) => {
            let t = t.unwrap_or_default();
            let path = |s: Option<String>| s.filter(|s| !s.is_empty()).map(PathBuf::from);
            let (cert_file, key_file) = (path(t.cert_file), path(t.key_file));
            match (&cert_file, &key_file) {
                (Some(_), None) => e.push(format!(
                    "{pre}: tls.cert_file: needs tls.key_file too (mutual TLS)"
                )),
                (None, Some(_)) => e.push(format!(
                    "{pre}: tls.key_file: needs tls.cert_file too (mutual TLS)"
                )),
                _ => {}
            }
            let server_name = match t.server_name.filter(|s| !s.is_empty()) {
                Some(s) if s.parse::<IpAddr>().is_err() && !host_name_ok(&s) => {
                    e.push(format!(
                        "{pre}: tls.server_name {s:?}: not a DNS name or IP address"
                    ));
                    s
                }
                Some(s) => s,
                None => split_address(&address)
                    .map(|(h, _)| h.to_owned())
                    .unwrap_or_default(),
            };
            let min_version = match t.min_version.as_deref() {
                None | Some("1.2") => TlsVersion::V1_2,
                Some("1.3") => TlsVersion::V1_3,
                Some(v) => {
                    e.push(format!(
                        "{pre}: tls.min_version {v:?}: expected \"1.2\" or \"1.3\""
                    ));
                    TlsVersion::V1_2
                }
            };
            Some(TlsConfig {
                ca_file: path(t.ca_file),
                cert_file,
                key_file,
                server_name,
                verify: t.verify.unwrap_or(true),
                min_version,
            })
        }
        (p, Some(_)) => {
            e.push(format!(
                "{pre}: tls: [syslog.tls] applies to protocol = \"tls\" only (protocol is {:?})",
                protocol_name(p)
            ));
            None
        }
        (_, None) => None,
    };

    if e.0.len() != before {
        return None;
    }
    Some(SyslogConfig {
        name,
        kind,
        address,
        render: render?,
        select,
        filter,
        tls,
    })
}

pub(super) const fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "udp",
        Protocol::Tcp => "tcp",
        Protocol::Tls => "tls",
    }
}

fn scalar_string(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `version` per system, normalised; `Err` = the reason.
fn ticket_version(system: TicketSystem, v: Option<&toml::Value>) -> Result<String, String> {
    let s = match v {
        None => None,
        Some(v) => Some(
            scalar_string(v)
                .ok_or_else(|| format!("version: expected a string, got {}", v.type_str()))?,
        ),
    };
    match (system, s.as_deref()) {
        (TicketSystem::Jira, None) => {
            Err("version: required for jira (\"cloud\" or \"server\")".into())
        }
        (TicketSystem::Jira, Some("cloud" | "server")) => Ok(s.unwrap_or_default()),
        (TicketSystem::Jira, Some(x)) => Err(format!(
            "version {x:?}: jira is \"cloud\" or \"server\" (Server and Data Center)"
        )),
        (TicketSystem::MantisBt, None | Some("2")) => Ok("2".into()),
        (TicketSystem::MantisBt, Some(x)) => Err(format!("version {x:?}: mantisbt is \"2\"")),
        (TicketSystem::Redmine, None | Some("5")) => Ok("5".into()),
        (TicketSystem::Redmine, Some("4")) => Ok("4".into()),
        (TicketSystem::Redmine, Some(x)) => {
            Err(format!("version {x:?}: redmine is \"4\" or \"5\""))
        }
    }
}

/// Checks an `http(s)://host[:port][/path]` base URL; returns it without a trailing `/`.
fn base_url(u: &str) -> Result<String, String> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not hold spaces or control characters".into());
    }
    if u.contains(['?', '#']) {
        return Err("must be a base URL without query or fragment".into());
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err("must not hold credentials (use auth_key_env / auth_key_file)".into());
    }
    if authority.is_empty() {
        return Err("missing host".into());
    }
    if authority.contains(':') {
        split_address(authority)?;
    }
    Ok(u.trim_end_matches('/').to_owned())
}

fn ticket_table(e: &mut Errs, i: usize, mut r: RawTicket) -> Option<TicketConfig> {
    let before = e.0.len();
    let pre = prefix("ticket", i, r.name.as_deref());
    let name = check_name(e, &pre, r.name.take());
    let system = match r.system.as_deref() {
        Some("jira") => Some(TicketSystem::Jira),
        Some("mantisbt") => Some(TicketSystem::MantisBt),
        Some("redmine") => Some(TicketSystem::Redmine),
        Some(s) => {
            e.push(format!(
                "{pre}: system {s:?}: expected \"jira\", \"mantisbt\" or \"redmine\""
            ));
            None
        }
        None => {
            e.push(format!(
                "{pre}: system: missing (\"jira\", \"mantisbt\" or \"redmine\")"
            ));
            None
        }
    };
    let version = system.and_then(|s| match ticket_version(s, r.version.as_ref()) {
        Ok(v) => Some(v),
        Err(why) => {
            e.push(format!("{pre}: {why}"));
            None
        }
    });
    let url = match r.url.take() {
        None => {
            e.push(format!("{pre}: url: missing"));
            String::new()
        }
        Some(u) => base_url(&u).unwrap_or_else(|why| {
            e.push(format!("{pre}: url {u:?}: {why}"));
            u
        }),
    };
    let project = match r.project.as_ref().map(|v| (v, scalar_string(v))) {
        None => {
            e.push(format!("{pre}: project: missing"));
            String::new()
        }
        Some((_, Some(p))) if !p.trim().is_empty() => p,
        Some((v, _)) => {
            e.push(format!(
                "{pre}: project: expected a non-empty string or id, got {v}"
            ));
            String::new()
        }
    };
    let auth = match (r.auth_key_env.take(), r.auth_key_file.take()) {
        (Some(_), Some(_)) => {
            e.push(format!(
                "{pre}: auth_key_env, auth_key_file: set one of them, not both"
            ));
            None
        }
        (None, None) => {
            e.push(format!(
                "{pre}: auth_key_env: missing (or auth_key_file); secrets never sit in the config file"
            ));
            None
        }
        (Some(v), None) if !env_name_ok(&v) => {
            e.push(format!(
                "{pre}: auth_key_env {v:?}: not an environment variable name (letters, digits, '_')"
            ));
            None
        }
        (Some(v), None) => Some(SecretSource::Env(v)),
        (None, Some(f)) if f.is_empty() => {
            e.push(format!("{pre}: auth_key_file: must not be empty"));
            None
        }
        (None, Some(f)) => Some(SecretSource::File(PathBuf::from(f))),
    };
    let jira_cloud = system == Some(TicketSystem::Jira) && version.as_deref() == Some("cloud");
    let user = match r.user.take() {
        Some(u) if u.trim().is_empty() => {
            e.push(format!("{pre}: user: must not be empty"));
            None
        }
        Some(u) if jira_cloud => Some(u),
        Some(_) if system.is_some() && version.is_some() => {
            e.push(format!(
                "{pre}: user: only for jira cloud (basic auth with an API token); this system authenticates with the key alone"
            ));
            None
        }
        None if jira_cloud => {
            e.push(format!(
                "{pre}: user: required for jira cloud (the account e-mail that owns the API token)"
            ));
            None
        }
        u => u,
    };
    let issue_type = r.issue_type.take().unwrap_or_else(|| "Task".into());
    if issue_type.trim().is_empty() {
        e.push(format!("{pre}: issue_type: must not be empty"));
    }
    let rate_per_minute = int(e, &pre, "rate_per_minute", r.rate_per_minute, 30, 1);
    let burst = int(e, &pre, "burst", r.burst, 10, 1);
    for (k, v) in [("rate_per_minute", rate_per_minute), ("burst", burst)] {
        if v > u64::from(u32::MAX) {
            e.push(format!("{pre}: {k}: {v} is too large"));
        }
    }
    let dedup_window_s = int(e, &pre, "dedup_window_s", r.dedup_window_s, 3600, 0);
    let dedup_key = r
        .dedup_key
        .take()
        .unwrap_or_else(|| vec!["filterId".into(), "serverIp".into()]);
    if dedup_key.is_empty() && dedup_window_s > 0 {
        e.push(format!(
            "{pre}: dedup_key: empty; name event fields (e.g. [\"filterId\", \"serverIp\"]) or set dedup_window_s = 0"
        ));
    }
    for k in &dedup_key {
        if Field::from_name(k).is_none() {
            let hint = Field::ALL
                .iter()
                .find(|f| f.name().eq_ignore_ascii_case(k))
                .map(|f| format!("; did you mean {:?}?", f.name()))
                .unwrap_or_default();
            e.push(format!(
                "{pre}: dedup_key: {k:?} is not an event field (event.md){hint}"
            ));
        }
    }
    let when = r.when.take().map(|mut w| {
        let select = Selection {
            detect: selection(
                e,
                &pre,
                "when.",
                LogType::Detect,
                w.detect.as_ref(),
                CategorySet::all(LogType::Detect),
            ),
            defense: selection(
                e,
                &pre,
                "when.",
                LogType::Defense,
                w.defense.as_ref(),
                CategorySet::all(LogType::Defense),
            ),
            usage: selection(
                e,
                &pre,
                "when.",
                LogType::Usage,
                w.usage.as_ref(),
                CategorySet::all(LogType::Usage),
            ),
        };
        let filter = filter(e, &pre, "when", w.take_filter());
        TicketWhen { select, filter }
    });
    if e.0.len() != before {
        return None;
    }
    Some(TicketConfig {
        name,
        system: system?,
        version: version?,
        url,
        project,
        auth: auth?,
        user,
        issue_type,
        include_raw_log: r.include_raw_log.unwrap_or(true),
        rate_per_minute: rate_per_minute as u32,
        burst: burst as u32,
        dedup_window_s,
        dedup_key,
        when,
    })
}

/// Parses the document into the raw tables. Each top-level table and each `[[syslog]]` /
/// `[[ticket]]` table is deserialized on its own, so that an unknown key or a wrong value in
/// one table does not hide those in the others; all of them come back, in file order.
pub(super) fn parse(src: &str) -> Result<RawConfig, ConfigError> {
    use serde::Deserialize;
    use toml::de::{DeTable, DeValue, ValueDeserializer};
    use toml::Spanned;

    fn de<'i, T: Deserialize<'i>>(
        src: &str,
        v: Spanned<DeValue<'i>>,
        errs: &mut Vec<(usize, String)>,
    ) -> Option<T> {
        let start = v.span().start;
        T::deserialize(ValueDeserializer::from(v))
            .map_err(|e| {
                let at = e.span().map_or(start, |s| s.start);
                errs.push((at, describe_toml_error(src, &e)));
            })
            .ok()
    }
    fn tables<'i, T: Deserialize<'i>>(
        src: &str,
        name: &str,
        v: Spanned<DeValue<'i>>,
        errs: &mut Vec<(usize, String)>,
    ) -> Vec<T> {
        let start = v.span().start;
        match v.into_inner() {
            DeValue::Array(items) => items
                .into_iter()
                .filter_map(|item| de(src, item, errs))
                .collect(),
            other => {
                let msg = format!("expected [[{name}]] tables, got {}", other.type_str());
                errs.push((start, describe_at(src, start, &msg)));
                Vec::new()
            }
        }
    }

    let root = DeTable::parse(src).map_err(|e| ConfigError::one(describe_toml_error(src, &e)))?;
    let mut raw = RawConfig::default();
    let mut errs = Vec::new();
    for (key, value) in root.into_inner() {
        match key.get_ref().as_ref() {
            "kafka" => raw.kafka = de(src, value, &mut errs),
            "forwarder" => raw.forwarder = de(src, value, &mut errs),
            "admin" => raw.admin = de(src, value, &mut errs),
            "compliance" => raw.compliance = de(src, value, &mut errs),
            "syslog" => raw.syslog = tables(src, "syslog", value, &mut errs),
            "ticket" => raw.ticket = tables(src, "ticket", value, &mut errs),
            other => {
                let at = key.span().start;
                let msg = format!(
                    "unknown field `{other}`, expected one of `kafka`, `forwarder`, `admin`, `compliance`, `syslog`, `ticket`"
                );
                errs.push((at, describe_at(src, at, &msg)));
            }
        }
    }
    if errs.is_empty() {
        Ok(raw)
    } else {
        errs.sort_by_key(|(at, _)| *at);
        Err(ConfigError(errs.into_iter().map(|(_, m)| m).collect()))
    }
}

/// A TOML syntax error or a refused key, on one line, naming the table it is in:
/// `syslog[1]: line 14, column 1: unknown field `colour`, expected one of ...`.
pub(super) fn describe_toml_error(src: &str, err: &toml::de::Error) -> String {
    let msg = with_suggestion(&one_line(err.message()));
    match err.span() {
        Some(span) => describe_at(src, span.start, &msg),
        None => format!("config: {msg}"),
    }
}

/// `unknown field `protocl`, expected one of ...` gains `(did you mean `protocol`?)`.
fn with_suggestion(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix("unknown field `") else {
        return msg.to_owned();
    };
    let Some((field, tail)) = rest.split_once('`') else {
        return msg.to_owned();
    };
    let best = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (edit_distance(field, k), k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => format!("unknown field `{field}` (did you mean `{k}`?){tail}"),
        None => msg.to_owned(),
    }
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The reason of a regex error, on one line (regex prints the pattern with a caret first).
fn regex_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    match text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
    {
        Some(reason) => format!("invalid regular expression: {reason}"),
        None => one_line(&text),
    }
}

/// `msg` at byte `offset` of `src`, prefixed with its table, line and column.
fn describe_at(src: &str, offset: usize, msg: &str) -> String {
    let mut start = offset.min(src.len());
    while !src.is_char_boundary(start) {
        start -= 1;
    }
    let line_start = src[..start].rfind('\n').map_or(0, |p| p + 1);
    let line_no = src[..start].matches('\n').count() + 1;
    let col = src[line_start..start].chars().count() + 1;
    let line = src[line_start..].lines().next().unwrap_or("");
    let table = table_at(&src[..line_start]);
    // Value errors ("invalid type", "unknown variant") do not name the key; the line does.
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty() && !k.starts_with('[') && !msg.contains(&format!("`{k}`")));
    match key {
        Some(k) => format!("{table}: line {line_no}, column {col}: {k}: {msg}"),
        None => format!("{table}: line {line_no}, column {col}: {msg}"),
    }
}

/// The table in force at the end of `before`: `syslog[1].filter`, `kafka`, or `config`.
fn table_at(before: &str) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut current = String::from("config");
    for line in before.lines() {
        let l = line.trim();
        let header = |open: &str, close: &str| {
            l.strip_prefix(open)
                .and_then(|r| r.split_once(close))
                .map(|(h, _)| {
                    h.split('.')
                        .map(|p| p.trim().trim_matches('"'))
                        .collect::<Vec<_>>()
                        .join(".")
                })
        };
        if l.starts_with("[[") {
            if let Some(name) = header("[[", "]]") {
                let n = counts.entry(name.clone()).or_insert(0);
                current = format!("{name}[{}]", *n);
                *n += 1;
            }
        } else if l.starts_with('[') {
            if let Some(name) = header("[", "]") {
                current = counts
                    .iter()
                    .filter(|(a, _)| name.starts_with(&format!("{a}.")))
                    .max_by_key(|(a, _)| a.len())
                    .map(|(a, n)| format!("{a}[{}]{}", n - 1, &name[a.len()..]))
                    .unwrap_or(name);
            }
        }
    }
    current
}
