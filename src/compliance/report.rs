//! The `GET /api/compliance` document: standard → control → title, hits, last seen, top
//! filters, since the mapping was loaded.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use serde_json::{json, Map, Value};

use super::load::pair_name;
use super::{Compliance, Source};
use crate::config::ComplianceMode;

/// How many sources `top_filters` lists per control.
pub const TOP_FILTERS: usize = 5;

fn rfc3339_ms(ms: i64) -> Value {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) if ms > 0 => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        _ => Value::Null,
    }
}

impl Compliance {
    /// The per-control totals as JSON (interfaces.md `GET /api/compliance`):
    ///
    /// ```json
    /// {"mode": "registered", "since": "…", "mapped_events": 3, "registered_filters": 1,
    ///  "standards": {"pci_dss_3_2_1": {"name": "PCI-DSS v3.2.1", "events": 3,
    ///    "controls": {"10.6.1": {"title": "…", "hits": 3, "last_seen": "…",
    ///      "top_filters": [{"filter_id": "F-1021", "hits": 2}, {"default": "detect/web", "hits": 1}]}}}}}
    /// ```
    /// Every control of `[controls.*]` is listed, with 0 hits when none was seen.
    pub fn report(&self) -> Value {
        let totals = self.totals();
        // (control, source) → hits, from the slots that were hit.
        let mut by_control: HashMap<u32, HashMap<u32, u64>> = HashMap::new();
        for slot in &self.slots {
            let hits = slot.hits.load(Ordering::Relaxed) + slot.carried;
            if hits == 0 {
                continue;
            }
            for &c in self.sets[slot.set as usize].ids.iter() {
                *by_control
                    .entry(c)
                    .or_default()
                    .entry(slot.source)
                    .or_default() += hits;
            }
        }
        let mut standards = Map::new();
        for (s, std) in self.standards.iter().enumerate() {
            let mut controls = Map::new();
            for (c, ctl) in self.controls.iter().enumerate() {
                if ctl.standard as usize != s {
                    continue;
                }
                let mut top: Vec<(u32, u64)> = by_control
                    .get(&(c as u32))
                    .map(|m| m.iter().map(|(&k, &v)| (k, v)).collect())
                    .unwrap_or_default();
                top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                top.truncate(TOP_FILTERS);
                let top: Vec<Value> = top
                    .into_iter()
                    .map(|(src, hits)| self.source_json(src, hits))
                    .collect();
                let mut o = Map::new();
                o.insert("title".into(), json!(ctl.title));
                if let Some(en) = &ctl.title_en {
                    o.insert("title_en".into(), json!(en));
                }
                o.insert("hits".into(), json!(totals.hits[c]));
                o.insert("last_seen".into(), rfc3339_ms(totals.last_seen_ms[c]));
                o.insert("top_filters".into(), Value::Array(top));
                controls.insert(ctl.id.to_string(), Value::Object(o));
            }
            standards.insert(
                std.id.to_string(),
                json!({
                    "name": std.display_name,
                    "events": totals.standard_events[s],
                    "controls": controls,
                }),
            );
        }
        json!({
            "mode": match self.mode {
                ComplianceMode::Registered => "registered",
                ComplianceMode::All => "all",
            },
            "since": rfc3339_ms(self.started_ms),
            "mapped_events": totals.events,
            "registered_filters": self.registered_filters(),
            "standards": standards,
        })
    }

    fn source_json(&self, src: u32, hits: u64) -> Value {
        let mut o = Map::new();
        match &self.sources[src as usize] {
            Source::Filter { id, name } => {
                if let Some(id) = id {
                    o.insert("filter_id".into(), json!(id));
                }
                if let Some(name) = name {
                    o.insert("filter_name".into(), json!(name));
                }
            }
            Source::Default(p) => {
                o.insert("default".into(), json!(pair_name(*p)));
            }
        }
        o.insert("hits".into(), json!(hits));
        Value::Object(o)
    }
}
