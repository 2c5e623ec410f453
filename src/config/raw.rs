//! The config file as written: every key optional, unknown keys refused by serde with the
//! key's name. Nothing here is used after [`super::validate`] has built the checked types.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::render::settings::{
    Bom, CefHeader, CefTime, Format, Framing, NameOrNumber, Newline, OnOversize, Protocol,
};

/// The whole file, assembled table by table by `validate::parse` (which refuses unknown
/// top-level keys itself, so that every table's errors are reported).
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub kafka: Option<RawKafka>,
    pub forwarder: Option<RawForwarder>,
    pub admin: Option<RawAdmin>,
    pub compliance: Option<RawCompliance>,
    pub syslog: Vec<RawSyslog>,
    pub ticket: Vec<RawTicket>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKafka {
    pub brokers: Option<String>,
    pub group_id: Option<String>,
    pub topics: Option<Vec<String>>,
    pub dead_letter_topic: Option<String>,
    pub retry_topic: Option<String>,
    pub ticket_history_topic: Option<String>,
    pub max_event_bytes: Option<i64>,
    pub topic_log_types: Option<BTreeMap<String, String>>,
    /// Scalars of any TOML type; converted to librdkafka's strings.
    pub properties: Option<BTreeMap<String, toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawForwarder {
    pub hostname: Option<String>,
    pub app_name: Option<String>,
    pub queue_events: Option<i64>,
    pub batch_max_events: Option<i64>,
    pub batch_max_bytes: Option<i64>,
    pub batch_linger_ms: Option<i64>,
    pub commit_interval_ms: Option<i64>,
    pub shutdown_grace_s: Option<i64>,
    pub park_after_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCompliance {
    pub mapping_file: Option<String>,
    pub mode: Option<String>,
}

/// One `[[syslog]]` table: destination keys and the rendering keys of
/// [`crate::render::settings::SettingsInput`] side by side (no `flatten`: it would break
/// `deny_unknown_fields`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSyslog {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub group: Option<String>,
    pub address: Option<String>,
    pub detect: Option<toml::Value>,
    pub defense: Option<toml::Value>,
    pub usage: Option<toml::Value>,
    pub filter: Option<RawFilter>,
    pub tls: Option<RawTls>,
    // Rendering keys, handed to SettingsInput::build.
    pub protocol: Option<Protocol>,
    pub format: Option<Format>,
    pub newline: Option<Newline>,
    pub framing: Option<Framing>,
    pub facility: Option<NameOrNumber>,
    pub severity: Option<NameOrNumber>,
    pub tz: Option<String>,
    pub frac_digits: Option<i64>,
    pub bom: Option<Bom>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    pub sd_id: Option<String>,
    pub tag_colon: Option<bool>,
    pub cef_header: Option<CefHeader>,
    pub cef_tag: Option<bool>,
    pub cef_labels: Option<bool>,
    pub cef_time: Option<CefTime>,
    pub include_raw_log: Option<bool>,
    pub include_compliance: Option<bool>,
    pub max_message_bytes: Option<i64>,
    pub on_oversize: Option<OnOversize>,
}

/// `[syslog.filter]`, and the filter keys of `[ticket.when]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFilter {
    pub min_risk: Option<i64>,
    pub filter_ids: Option<Vec<toml::Value>>,
    pub filter_names: Option<Vec<String>>,
    pub server_ips: Option<Vec<String>>,
    pub detect_ips: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub fields: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub server_name: Option<String>,
    pub verify: Option<bool>,
    pub min_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTicket {
    pub name: Option<String>,
    pub system: Option<String>,
    /// A string, or an integer for MantisBT / Redmine (`version = 5`).
    pub version: Option<toml::Value>,
    pub url: Option<String>,
    /// A string, or an integer id.
    pub project: Option<toml::Value>,
    pub auth_key_env: Option<String>,
    pub auth_key_file: Option<String>,
    pub user: Option<String>,
    pub issue_type: Option<String>,
    pub include_raw_log: Option<bool>,
    pub rate_per_minute: Option<i64>,
    pub burst: Option<i64>,
    pub dedup_window_s: Option<i64>,
    pub dedup_key: Option<Vec<String>>,
    pub when: Option<RawWhen>,
}

/// `[ticket.when]`: selections plus the filter keys of `[syslog.filter]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWhen {
    pub detect: Option<toml::Value>,
    pub defense: Option<toml::Value>,
    pub usage: Option<toml::Value>,
    pub min_risk: Option<i64>,
    pub filter_ids: Option<Vec<toml::Value>>,
    pub filter_names: Option<Vec<String>>,
    pub server_ips: Option<Vec<String>>,
    pub detect_ips: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub fields: Option<BTreeMap<String, String>>,
}

impl RawWhen {
    /// The filter keys, as a [`RawFilter`].
    pub fn take_filter(&mut self) -> RawFilter {
        RawFilter {
            min_risk: self.min_risk.take(),
            filter_ids: self.filter_ids.take(),
            filter_names: self.filter_names.take(),
            server_ips: self.server_ips.take(),
            detect_ips: self.detect_ips.take(),
            groups: self.groups.take(),
            fields: self.fields.take(),
        }
    }
}
