//! Config (TEMPORARY STUB on main; replaced by the config branch at merge).
#![allow(missing_docs, dead_code)]
use std::collections::BTreeMap;
use std::path::Path;
use crate::render::RenderSettings;
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);
pub struct Config { pub kafka: KafkaConfig, pub forwarder: ForwarderConfig, pub admin: AdminConfig, pub syslog: Vec<SyslogConfig> }
pub struct KafkaConfig { pub brokers: String, pub group_id: String, pub topics: Vec<String>, pub dead_letter_topic: String, pub retry_topic: String, pub max_event_bytes: usize, pub topic_log_types: BTreeMap<String, String>, pub properties: BTreeMap<String, String> }
pub struct ForwarderConfig { pub queue_events: usize, pub batch_max_events: usize, pub batch_max_bytes: usize, pub batch_linger_ms: u64, pub commit_interval_ms: u64, pub shutdown_grace_s: u64 }
pub struct AdminConfig { pub listen: String, pub token_env: String }
pub struct SyslogConfig { pub name: String, pub address: String, pub render: RenderSettings }
pub fn load(_p: &Path) -> Result<Config, ConfigError> { Err(ConfigError("stub".into())) }
impl Config { pub fn summary(&self) -> String { String::new() } }
