//! Route stage: which destinations want a classified event.
//!
//! Everything is compiled once from the checked config (globs, regexes, networks); routing an
//! event only reads it and never allocates. Order of checks per destination: scope (kind and
//! group) → selection (`detect` / `defense` / `usage`) → `[syslog.filter]`.

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use ipnet::IpNet;
use regex::Regex;

use crate::config::{ConfigError, FilterConfig, Kind, Selection, SyslogConfig};
use crate::event::{Event, Field, LogType, Value};

/// What one destination does with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not for this destination at all: a group server and another group, no group, or a
    /// usage log.
    OutOfScope,
    /// In scope, but the destination's selection or filter does not want it (counted as
    /// `events_filtered_total`).
    Filtered,
    /// Send it.
    Routed,
}

/// `filter_names` globs → one anchored regex: `*` any run of characters, `?` exactly one
/// character (a Unicode scalar, so `?` matches one Hangul syllable); everything else literal.
///
/// # Errors
/// Only when the combined pattern exceeds the regex size limit.
pub fn glob_regex(patterns: &[String]) -> Result<Regex, regex::Error> {
    let mut re = String::from("(?s)^(?:");
    for (i, p) in patterns.iter().enumerate() {
        if i > 0 {
            re.push('|');
        }
        for c in p.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                c => {
                    let mut buf = [0u8; 4];
                    re.push_str(&regex::escape(c.encode_utf8(&mut buf)));
                }
            }
        }
    }
    re.push_str(")$");
    Regex::new(&re)
}

/// A compiled selection + filter: the test of one destination, or of a `[ticket.when]`.
#[derive(Debug, Clone)]
pub struct Matcher {
    select: Selection,
    min_risk: Option<u8>,
    filter_ids: Vec<Box<str>>,
    filter_names: Option<Regex>,
    server_ips: Vec<IpNet>,
    detect_ips: Vec<IpNet>,
    groups: Vec<Box<str>>,
    fields: Vec<(Option<Field>, Box<str>, Regex)>,
}

impl Matcher {
    /// Compiles a selection and filter.
    ///
    /// # Errors
    /// A glob set too large to compile (the config loader has already refused it).
    pub fn new(select: &Selection, f: &FilterConfig) -> Result<Matcher, String> {
        let filter_names = if f.filter_names.is_empty() {
            None
        } else {
            Some(glob_regex(&f.filter_names).map_err(|e| format!("filter.filter_names: {e}"))?)
        };
        Ok(Matcher {
            select: *select,
            min_risk: f.min_risk,
            filter_ids: f.filter_ids.iter().map(|s| s.as_str().into()).collect(),
            filter_names,
            server_ips: f.server_ips.iter().map(IpNet::trunc).collect(),
            detect_ips: f.detect_ips.iter().map(IpNet::trunc).collect(),
            groups: f.groups.iter().map(|s| s.as_str().into()).collect(),
            fields: f
                .fields
                .iter()
                .map(|fr| {
                    (
                        Field::from_name(&fr.field),
                        fr.field.as_str().into(),
                        fr.regex.clone(),
                    )
                })
                .collect(),
        })
    }

    /// Whether a `filter.fields` condition tests `field`.
    pub fn reads(&self, field: Field) -> bool {
        self.fields.iter().any(|(f, _, _)| *f == Some(field))
    }

    /// Whether the selection and every filter condition hold.
    pub fn matches(&self, ev: &Event<'_>) -> bool {
        self.select.wants(ev.log_type, ev.category) && self.filter_holds(ev)
    }

    fn filter_holds(&self, ev: &Event<'_>) -> bool {
        if let Some(min) = self.min_risk {
            if !risk_at_least(ev.text(Field::FilterRiskLevel), min) {
                return false;
            }
        }
        if !self.filter_ids.is_empty() {
            match ev.text(Field::FilterId) {
                Some(id) if self.filter_ids.iter().any(|x| &**x == id) => {}
                _ => return false,
            }
        }
        if let Some(re) = &self.filter_names {
            match ev.text(Field::FilterName) {
                Some(n) if re.is_match(n) => {}
                _ => return false,
            }
        }
        if !self.server_ips.is_empty() && !ip_in(ev.text(Field::ServerIp), &self.server_ips) {
            return false;
        }
        if !self.detect_ips.is_empty() && !ip_in(ev.text(Field::DetectIp), &self.detect_ips) {
            return false;
        }
        if !self.groups.is_empty() {
            match ev.group() {
                Some(g) if self.groups.iter().any(|x| &**x == g) => {}
                _ => return false,
            }
        }
        self.fields.iter().all(|(known, name, re)| {
            let text = match known {
                // The classification, also when a topic binding supplied the log type.
                Some(Field::LogType) => Some(ev.log_type.name()),
                Some(Field::Category) => Some(ev.category.name()),
                Some(f) => ev.text(*f),
                None => ev.get_by_name(name).map(Value::as_text),
            };
            text.is_some_and(|t| re.is_match(t))
        })
    }
}

/// `filterRiskLevel >= min`: an integer (or a number in its JSON text); `-`, missing or
/// anything unparseable fails.
fn risk_at_least(v: Option<&str>, min: u8) -> bool {
    let Some(t) = v.map(str::trim) else {
        return false;
    };
    if let Ok(n) = t.parse::<i64>() {
        return n >= i64::from(min);
    }
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() => x >= f64::from(min),
        _ => false,
    }
}

/// Whether the text is an IP address inside one of `nets` (IPv4-mapped IPv6 counts as IPv4).
fn ip_in(v: Option<&str>, nets: &[IpNet]) -> bool {
    let Some(ip) = v.and_then(|t| t.trim().parse::<IpAddr>().ok()) else {
        return false;
    };
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

#[derive(Debug, Clone)]
struct Destination {
    /// `None` = representative.
    group: Option<Box<str>>,
    matcher: Matcher,
}

/// The routing table: one compiled entry per `[[syslog]]` destination, in config order.
#[derive(Debug, Clone)]
pub struct Router {
    dests: Vec<Destination>,
}

impl Router {
    /// Compiles the destinations' scopes, selections and filters.
    ///
    /// # Errors
    /// A filter that cannot be compiled (the config loader has already checked them).
    pub fn new(d: &[SyslogConfig]) -> Result<Router, ConfigError> {
        let mut errs = Vec::new();
        let mut dests = Vec::with_capacity(d.len());
        for (i, s) in d.iter().enumerate() {
            match Matcher::new(&s.select, &s.filter) {
                Ok(matcher) => dests.push(Destination {
                    group: match &s.kind {
                        Kind::Representative => None,
                        Kind::Group(g) => Some(g.as_str().into()),
                    },
                    matcher,
                }),
                Err(e) => errs.push(format!("syslog[{i}] {:?}: {e}", s.name)),
            }
        }
        if !errs.is_empty() {
            return Err(ConfigError(errs));
        }
        Ok(Router { dests })
    }

    /// Whether some destination's filter tests `field`.
    pub fn reads(&self, field: Field) -> bool {
        self.dests.iter().any(|d| d.matcher.reads(field))
    }

    /// Number of destinations.
    pub fn len(&self) -> usize {
        self.dests.len()
    }

    /// Whether there are no destinations.
    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    /// One decision per destination, in config order, into `out` (cleared first; reuse it so
    /// that routing does not allocate).
    pub fn route(&self, ev: &Event<'_>, out: &mut Vec<Decision>) {
        out.clear();
        out.extend(self.dests.iter().map(|d| decide(d, ev)));
    }
}

fn decide(d: &Destination, ev: &Event<'_>) -> Decision {
    if let Some(g) = &d.group {
        // 그룹별 Syslog: one group's detect and defense logs, never usage logs.
        if ev.log_type == LogType::Usage || ev.group() != Some(&**g) {
            return Decision::OutOfScope;
        }
    }
    if d.matcher.matches(ev) {
        Decision::Routed
    } else {
        Decision::Filtered
    }
}
