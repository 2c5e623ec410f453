//! Config stage: the TOML file of config.md → a checked [`Config`].
//!
//! Parsing is strict (unknown keys are errors naming the key and its table); validation
//! collects every error, each naming the table, the key and the reason, so an operator fixes
//! a file in one pass. Runtime code only ever sees the checked types below.

mod raw;
mod summary;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use regex::Regex;

use crate::event::{Category, LogType};
use crate::render::RenderSettings;

/// The documented example config (`config/forwarder.toml`); it loads without errors.
pub const DEFAULT_TOML: &str = include_str!("../../config/forwarder.toml");

/// Every problem found in a config file, one line each, each naming table, key and reason,
/// e.g. `syslog[2] "soc-b": address "10.0.0.5": missing port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub Vec<String>);

impl ConfigError {
    /// One error.
    pub fn one(msg: impl Into<String>) -> Self {
        ConfigError(vec![msg.into()])
    }

    /// The errors, in file order.
    pub fn errors(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

/// A checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[kafka]`.
    pub kafka: KafkaConfig,
    /// `[forwarder]`.
    pub forwarder: ForwarderConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[[syslog]]`, in file order.
    pub syslog: Vec<SyslogConfig>,
    /// `[[ticket]]`, in file order.
    pub ticket: Vec<TicketConfig>,
    /// `[compliance]`.
    pub compliance: ComplianceConfig,
    /// The file this was loaded from (`None` for [`from_toml_str`]).
    pub path: Option<PathBuf>,
}

/// `[kafka]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap list, or `"embedded"` (an in-process Kafka, demo only). Default `127.0.0.1:9092`.
    pub brokers: String,
    /// Consumer group. Default `plura-forwarder`.
    pub group_id: String,
    /// Topics consumed; never empty.
    pub topics: Vec<String>,
    /// Invalid events and events a destination gave up on.
    pub dead_letter_topic: String,
    /// Prefix of the per-destination retry topics `{retry_topic}.{destination}`.
    pub retry_topic: String,
    /// One record per ticket issued.
    pub ticket_history_topic: String,
    /// Larger events are invalid (`too_large`). Default 1 MiB.
    pub max_event_bytes: usize,
    /// Topic → log type name (`detect` / `defense` / `usage`), checked.
    pub topic_log_types: BTreeMap<String, String>,
    /// librdkafka properties, passed through.
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Whether `brokers = "embedded"` (the demo's in-process Kafka).
    pub fn is_embedded(&self) -> bool {
        self.brokers == "embedded"
    }
}

/// `[forwarder]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwarderConfig {
    /// HOSTNAME in syslog headers, resolved: `""` in the file = this machine's host name.
    /// Empty only when that cannot be found out (headers then carry `-`).
    pub hostname: String,
    /// APP-NAME (RFC 5424) / TAG (RFC 3164). Default `Plura`.
    pub app_name: String,
    /// Per-destination in-memory queue, in events. Default 65536.
    pub queue_events: usize,
    /// Default 1024.
    pub batch_max_events: usize,
    /// Default 1 MiB.
    pub batch_max_bytes: usize,
    /// Default 5. The longest a partial batch waits for more frames; it goes at once when
    /// the consumer has nothing more ready.
    pub batch_linger_ms: u64,
    /// Default 1000.
    pub commit_interval_ms: u64,
    /// Default 30.
    pub shutdown_grace_s: u64,
    /// A destination whose queue stays full this long is parked (delivery.md). Default 1000.
    pub park_after_ms: u64,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Socket address of the admin listener; checked to parse as [`SocketAddr`].
    pub listen: String,
    /// Environment variable holding the bearer token for `/api/*` (empty = `/api` off).
    pub token_env: String,
}

impl AdminConfig {
    /// The listen address (checked at load).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.parse().expect("checked at load")
    }
}

/// `[compliance] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComplianceMode {
    /// Only events of registered filters are mapped (the vendor's behaviour).
    Registered,
    /// Every event gets its category's default controls.
    All,
}

/// `[compliance]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceConfig {
    /// The mapping file (relative paths: to the working directory). Default `config/compliance.toml`.
    pub mapping_file: PathBuf,
    /// Default [`ComplianceMode::Registered`].
    pub mode: ComplianceMode,
}

/// Which logs a destination receives before its selections and filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// 대표 Syslog: every log.
    Representative,
    /// 그룹별 Syslog: detect and defense logs of this group only, never usage logs.
    Group(String),
}

/// A set of categories of one log type (bits of [`Category::bit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct CategorySet(pub u16);

impl CategorySet {
    /// No category.
    pub const NONE: CategorySet = CategorySet(0);

    /// Every category of `log_type`.
    pub fn all(log_type: LogType) -> Self {
        CategorySet(log_type.categories().iter().fold(0, |b, c| b | c.bit()))
    }

    /// Whether `c` is in the set.
    #[inline]
    pub const fn contains(self, c: Category) -> bool {
        self.0 & c.bit() != 0
    }

    /// Adds `c`.
    pub fn insert(&mut self, c: Category) {
        self.0 |= c.bit();
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// `"all"`, `"none"` or the category names, for summaries.
    pub fn describe(self, log_type: LogType) -> String {
        if self == Self::all(log_type) {
            "all".into()
        } else if self.is_empty() {
            "none".into()
        } else {
            let names: Vec<&str> = log_type
                .categories()
                .iter()
                .filter(|c| self.contains(**c))
                .map(|c| c.name())
                .collect();
            names.join(",")
        }
    }
}

/// The `detect` / `defense` / `usage` keys ("로그별 알림 설정").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Selection {
    /// 탐지 로그.
    pub detect: CategorySet,
    /// 방어 로그.
    pub defense: CategorySet,
    /// 사용 로그.
    pub usage: CategorySet,
}

impl Selection {
    /// Every category of every log type.
    pub fn all() -> Self {
        Selection {
            detect: CategorySet::all(LogType::Detect),
            defense: CategorySet::all(LogType::Defense),
            usage: CategorySet::all(LogType::Usage),
        }
    }

    /// The set for one log type.
    #[inline]
    pub const fn get(&self, log_type: LogType) -> CategorySet {
        match log_type {
            LogType::Detect => self.detect,
            LogType::Defense => self.defense,
            LogType::Usage => self.usage,
        }
    }

    /// Whether events of this (log type, category) are selected.
    #[inline]
    pub const fn wants(&self, log_type: LogType, category: Category) -> bool {
        self.get(log_type).contains(category)
    }

    /// `detect=all defense=none usage=member,filter`, for summaries.
    pub fn describe(&self) -> String {
        LogType::ALL
            .iter()
            .map(|t| format!("{}={}", t.name(), self.get(*t).describe(*t)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One `[syslog.filter.fields]` entry: any event field → regular expression.
#[derive(Debug, Clone)]
pub struct FieldRegex {
    /// The event field name (known or not).
    pub field: String,
    /// Compiled once at load; matched with `is_match` (unanchored unless the pattern anchors).
    pub regex: Regex,
}

impl PartialEq for FieldRegex {
    fn eq(&self, o: &Self) -> bool {
        self.field == o.field && self.regex.as_str() == o.regex.as_str()
    }
}

/// `[syslog.filter]` ("필터 상세 설정"): every condition present must hold. Empty lists mean
/// "not set" (the file refuses an empty list).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterConfig {
    /// `filterRiskLevel >= min_risk` (0..10); `-` or missing fails.
    pub min_risk: Option<u8>,
    /// `filterId` is one of these.
    pub filter_ids: Vec<String>,
    /// `filterName` matches one of these globs (`*` any run of characters, `?` one character).
    pub filter_names: Vec<String>,
    /// `serverIp` is in one of these networks (plain addresses are /32 or /128).
    pub server_ips: Vec<IpNet>,
    /// `detectIp` is in one of these networks.
    pub detect_ips: Vec<IpNet>,
    /// The event's group is one of these.
    pub groups: Vec<String>,
    /// Each named field is present and matches its regex.
    pub fields: Vec<FieldRegex>,
}

impl FilterConfig {
    /// Whether no condition is set.
    pub fn is_empty(&self) -> bool {
        self.min_risk.is_none()
            && self.filter_ids.is_empty()
            && self.filter_names.is_empty()
            && self.server_ips.is_empty()
            && self.detect_ips.is_empty()
            && self.groups.is_empty()
            && self.fields.is_empty()
    }

    /// `min_risk=3 filter_ids=[F-1]`, for summaries.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.min_risk {
            parts.push(format!("min_risk={n}"));
        }
        let list = |k: &str, v: &[String], parts: &mut Vec<String>| {
            if !v.is_empty() {
                parts.push(format!("{k}=[{}]", v.join(", ")));
            }
        };
        list("filter_ids", &self.filter_ids, &mut parts);
        list("filter_names", &self.filter_names, &mut parts);
        let nets = |v: &[IpNet]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        list("server_ips", &nets(&self.server_ips), &mut parts);
        list("detect_ips", &nets(&self.detect_ips), &mut parts);
        list("groups", &self.groups, &mut parts);
        for f in &self.fields {
            parts.push(format!("{}~/{}/", f.field, f.regex.as_str()));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }
}

/// `[syslog.tls]` (present exactly when `protocol = "tls"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA bundle; `None` = the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (always together with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// Client key for mutual TLS.
    pub key_file: Option<PathBuf>,
    /// SNI and verification name; default the host part of `address`.
    pub server_name: String,
    /// Verify the server certificate. Default true; false only for a lab (warned).
    pub verify: bool,
    /// Oldest TLS version offered (`min_version`, "1.2" or "1.3"); 1.3 is always preferred.
    pub min_version: TlsVersion,
}

/// A TLS protocol version, for `[syslog.tls] min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5425's mandatory version; the default minimum).
    #[default]
    V1_2,
    /// TLS 1.3.
    V1_3,
}

/// One `[[syslog]]` destination.
#[derive(Debug, Clone, PartialEq)]
pub struct SyslogConfig {
    /// Unique; safe as a metric label and URL path segment.
    pub name: String,
    /// Representative or group server.
    pub kind: Kind,
    /// `host:port` (IPv6 in brackets), checked; host names are resolved on (re)connect.
    pub address: String,
    /// The checked rendering keys (protocol included).
    pub render: RenderSettings,
    /// `detect` / `defense` / `usage` (usage is empty for group servers).
    pub select: Selection,
    /// `[syslog.filter]`.
    pub filter: FilterConfig,
    /// `[syslog.tls]`, `Some` exactly when the protocol is TLS.
    pub tls: Option<TlsConfig>,
}

/// Where a secret comes from (never the config file itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable (`*_env`).
    Env(String),
    /// A file, e.g. a Kubernetes Secret mount (`*_file`); a trailing newline is dropped.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret now.
    ///
    /// # Errors
    /// The variable is unset or empty, or the file cannot be read or is empty; the text
    /// names the variable or file, never the secret.
    pub fn read(&self) -> Result<String, String> {
        let v = match self {
            SecretSource::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set"))?,
            SecretSource::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        };
        let v = v.trim_end_matches(['\r', '\n']).to_owned();
        if v.is_empty() {
            return Err(match self {
                SecretSource::Env(name) => format!("environment variable {name} is empty"),
                SecretSource::File(p) => format!("{} is empty", p.display()),
            });
        }
        Ok(v)
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(n) => write!(f, "env {n}"),
            SecretSource::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// `[[ticket]] system`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TicketSystem {
    /// Jira Cloud (`version = "cloud"`) or Server / Data Center (`"server"`).
    Jira,
    /// MantisBT 2.x.
    MantisBt,
    /// Redmine 4.x / 5.x.
    Redmine,
}

impl TicketSystem {
    /// The config name.
    pub const fn name(self) -> &'static str {
        match self {
            TicketSystem::Jira => "jira",
            TicketSystem::MantisBt => "mantisbt",
            TicketSystem::Redmine => "redmine",
        }
    }
}

/// `[ticket.when]`: which events issue tickets automatically.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketWhen {
    /// `detect` / `defense` / `usage` (each default `"all"`).
    pub select: Selection,
    /// `min_risk` and the other `[syslog.filter]` keys, all optional.
    pub filter: FilterConfig,
}

/// One `[[ticket]]` system ("티켓 시스템 연동").
#[derive(Debug, Clone, PartialEq)]
pub struct TicketConfig {
    /// Unique; safe as a metric label and URL path segment.
    pub name: String,
    /// Jira, MantisBT or Redmine.
    pub system: TicketSystem,
    /// Jira `cloud` | `server`; MantisBT `2`; Redmine `4` | `5`.
    pub version: String,
    /// Base URL, `http://` or `https://`, without a trailing `/`.
    pub url: String,
    /// Project key / id / identifier.
    pub project: String,
    /// The API token / key.
    pub auth: SecretSource,
    /// Jira Cloud account e-mail (basic auth with the API token); `None` elsewhere.
    pub user: Option<String>,
    /// Jira issue type / Redmine tracker / MantisBT category. Default `Task`.
    pub issue_type: String,
    /// Put `logOrigin` in the description. Default true.
    pub include_raw_log: bool,
    /// Token bucket rate. Default 30.
    pub rate_per_minute: u32,
    /// Token bucket size. Default 10.
    pub burst: u32,
    /// Same dedup key within this window adds nothing (0 = no dedup). Default 3600.
    pub dedup_window_s: u64,
    /// Event field names (event.md) forming the dedup key. Default `["filterId", "serverIp"]`.
    pub dedup_key: Vec<String>,
    /// Automatic tickets; `None` = manual tickets only (admin API).
    pub when: Option<TicketWhen>,
}

impl TicketConfig {
    /// Jira Cloud (REST v3, basic auth with `user` + token).
    pub fn is_jira_cloud(&self) -> bool {
        self.system == TicketSystem::Jira && self.version == "cloud"
    }
}

/// Reads, parses and validates the file; sets [`Config::path`]. Files the config names
/// (TLS files, `auth_key_file`, the compliance mapping) must exist.
///
/// # Errors
/// The file cannot be read, or any error of [`from_toml_str`] and the file checks, all of them.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(format!("{}: cannot read: {e}", path.display())))?;
    let mut config = from_toml_str(&src)?;
    let missing = config.check_files();
    if !missing.is_empty() {
        return Err(ConfigError(missing));
    }
    config.path = Some(path.to_owned());
    Ok(config)
}

/// Parses and validates a config text. Does not look at the files it names (see
/// [`Config::check_files`]).
///
/// # Errors
/// Every error found, each naming table, key and reason. A TOML syntax error is reported
/// alone; unknown keys and wrongly typed values are reported for every table (the first per
/// table) before any further checks run.
pub fn from_toml_str(src: &str) -> Result<Config, ConfigError> {
    validate::build(validate::parse(src)?)
}

impl Config {
    /// Errors for files the config names that do not exist or are not files: TLS `ca_file`,
    /// `cert_file`, `key_file`, ticket `auth_key_file`, `[compliance] mapping_file`.
    pub fn check_files(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let mut check = |what: String, p: &Path| {
            if !p.is_file() {
                errs.push(format!(
                    "{what} {:?}: no such file",
                    p.display().to_string()
                ));
            }
        };
        for (i, d) in self.syslog.iter().enumerate() {
            if let Some(t) = &d.tls {
                let pre = format!("syslog[{i}] {:?}: tls.", d.name);
                for (k, f) in [
                    ("ca_file", &t.ca_file),
                    ("cert_file", &t.cert_file),
                    ("key_file", &t.key_file),
                ] {
                    if let Some(p) = f {
                        check(format!("{pre}{k}"), p);
                    }
                }
            }
        }
        for (i, t) in self.ticket.iter().enumerate() {
            if let SecretSource::File(p) = &t.auth {
                check(format!("ticket[{i}] {:?}: auth_key_file", t.name), p);
            }
        }
        check(
            "compliance: mapping_file".into(),
            &self.compliance.mapping_file,
        );
        errs
    }

    /// Non-fatal remarks for `check` and the start-up log, each naming its table.
    pub fn warnings(&self) -> Vec<String> {
        summary::warnings(self)
    }

    /// A human summary for `plura-forwarder check`.
    pub fn summary(&self) -> String {
        summary::summary(self)
    }

    /// Re-reads [`Config::path`] (SIGHUP, `POST /api/reload`): the new config, or every error,
    /// in which case the caller keeps running this one.
    ///
    /// # Errors
    /// As [`load`]; also when this config was not loaded from a file.
    pub fn reload(&self) -> Result<Config, ConfigError> {
        match &self.path {
            Some(p) => load(p),
            None => Err(ConfigError::one(
                "config: not loaded from a file; nothing to reload",
            )),
        }
    }

    /// The destination named `name`.
    pub fn destination(&self, name: &str) -> Option<&SyslogConfig> {
        self.syslog.iter().find(|d| d.name == name)
    }

    /// The ticket system named `name`.
    pub fn ticket(&self, name: &str) -> Option<&TicketConfig> {
        self.ticket.iter().find(|t| t.name == name)
    }
}

pub use validate::split_address;
