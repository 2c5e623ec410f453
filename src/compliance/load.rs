//! The mapping file (compliance.md, `config/compliance.toml`) → a validated [`Compliance`].
//!
//! Shape: `schema_version = 1`; `[standards.<std>]` metadata (`display_name`, free keys);
//! `[controls.<std>]` with `"<id>" = { title = "…", title_en = "…" }` (the ids that exist);
//! `[[map]]` rows `log_type`, `category`, `<std> = ["<id>", …]` (category defaults);
//! `[[filter]]` entries `filter_id` and/or `filter_name`, optional `log_type` / `category`
//! scope, `extend = true|false` (default false: a listed standard replaces the default),
//! optional `note`, and `<std> = ["<id>", …]`. Every problem is collected and names its entry.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64};

use toml::{Table, Value};

use super::{now_ms, Compliance, Control, Controls, FilterTable, Slot, Source, Standard, PAIRS};
use crate::config::ComplianceMode;
use crate::event::{Category, LogType, ALL_PAIRS};
use crate::metrics as m;

/// Standards in the order compliance.md names them; others follow, alphabetically.
const CANONICAL: [&str; 4] = ["pci_dss_3_2_1", "isms_p", "iso27001_2013", "efsr"];

/// One problem in a mapping file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A standard that has no `[controls.<std>]` table.
    #[error("{at}: unknown standard {standard:?} (no [controls.{standard}] table)")]
    UnknownStandard {
        /// The entry, e.g. `map[3] (detect/web)`.
        at: String,
        /// The standard as written.
        standard: String,
    },
    /// A control id not listed under `[controls.<std>]`.
    #[error("{at}: {standard}: unknown control id {id:?} (not in [controls.{standard}])")]
    UnknownControl {
        /// The entry.
        at: String,
        /// The standard.
        standard: String,
        /// The control id as written.
        id: String,
    },
    /// Anything else: a missing or mistyped key, a duplicate, a bad name.
    #[error("{at}: {msg}")]
    Invalid {
        /// The entry or key.
        at: String,
        /// What is wrong.
        msg: String,
    },
}

/// Why a mapping file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("compliance mapping {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read; these entries are wrong.
    #[error("{}", Lines(path.as_deref(), problems))]
    Invalid {
        /// The file, when loaded from one.
        path: Option<String>,
        /// Every problem, in file order.
        problems: Vec<Problem>,
    },
}

struct Lines<'a>(Option<&'a str>, &'a [Problem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.1.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match self.0 {
                Some(path) => write!(f, "compliance mapping {path}: {p}")?,
                None => write!(f, "compliance mapping: {p}")?,
            }
        }
        Ok(())
    }
}

impl LoadError {
    /// One line per problem (for `check`, `POST /api/reload`).
    pub fn errors(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_owned).collect()
    }

    pub(super) fn in_file(self, path: &Path) -> Self {
        match self {
            LoadError::Invalid { problems, .. } => LoadError::Invalid {
                path: Some(path.display().to_string()),
                problems,
            },
            e => e,
        }
    }
}

fn invalid(at: impl Into<String>, msg: impl Into<String>) -> Problem {
    Problem::Invalid {
        at: at.into(),
        msg: msg.into(),
    }
}

/// Characters that would break `std:id,id;std:id`, SD PARAM-VALUEs or CEF values.
fn bad_id(id: &str) -> bool {
    id.is_empty()
        || id.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, ',' | ';' | ':' | '"' | '\\' | ']' | '=' | '|')
        })
}

/// Per standard (canonical index), the control indices of one mapping, in file order.
type PerStd = Vec<Vec<u32>>;

struct Builder {
    problems: Vec<Problem>,
    std_index: HashMap<String, usize>,
    standards: Vec<Standard>,
    controls: Vec<Control>,
    control_index: HashMap<(usize, String), u32>,
    sets: Vec<Controls>,
    set_index: HashMap<Vec<u32>, u32>,
    sources: Vec<Source>,
    slots: Vec<Slot>,
    slot_index: HashMap<(u32, u32), u32>,
}

pub(super) fn build(src: &str, mode: ComplianceMode) -> Result<Compliance, LoadError> {
    let fail = |problems| LoadError::Invalid {
        path: None,
        problems,
    };
    let mut root: Table = src
        .parse()
        .map_err(|e: toml::de::Error| fail(vec![invalid("toml", e.message().to_owned())]))?;
    let mut b = Builder {
        problems: Vec::new(),
        std_index: HashMap::new(),
        standards: Vec::new(),
        controls: Vec::new(),
        control_index: HashMap::new(),
        sets: Vec::new(),
        set_index: HashMap::new(),
        sources: Vec::new(),
        slots: Vec::new(),
        slot_index: HashMap::new(),
    };
    for key in root.keys() {
        if !matches!(
            key.as_str(),
            "schema_version" | "standards" | "controls" | "map" | "filter"
        ) {
            b.problems.push(invalid(
                key.as_str(),
                "unknown key, expected one of `schema_version`, `standards`, `controls`, `map`, `filter`",
            ));
        }
    }
    match root.remove("schema_version") {
        None | Some(Value::Integer(1)) => {}
        Some(v) => b
            .problems
            .push(invalid("schema_version", format!("{v}: expected 1"))),
    }
    let controls = match root.remove("controls") {
        Some(Value::Table(t)) => t,
        Some(_) => {
            b.problems
                .push(invalid("controls", "expected tables [controls.<standard>]"));
            Table::new()
        }
        None => {
            b.problems.push(invalid(
                "controls",
                "missing: every standard needs a [controls.<standard>] table of its control ids",
            ));
            Table::new()
        }
    };
    let meta = match root.remove("standards") {
        Some(Value::Table(t)) => t,
        None => Table::new(),
        Some(_) => {
            b.problems.push(invalid(
                "standards",
                "expected tables [standards.<standard>]",
            ));
            Table::new()
        }
    };
    b.standards_and_controls(controls, &meta);
    let defaults = b.defaults(root.remove("map"));
    let (by_id, by_name) = b.filters(root.remove("filter"), &defaults);
    let mut default_slots = [None; PAIRS];
    for (p, per) in defaults.iter().enumerate() {
        if let Some(per) = per {
            let set = b.intern(per);
            if !b.sets[set as usize].is_empty() {
                b.sources.push(Source::Default(p));
                let source = (b.sources.len() - 1) as u32;
                default_slots[p] = Some(b.slot(source, set));
            }
        }
    }
    if !b.problems.is_empty() {
        return Err(fail(b.problems));
    }
    Ok(Compliance {
        mode,
        standards: b.standards,
        controls: b.controls,
        sets: b.sets,
        sources: b.sources,
        slots: b.slots,
        defaults: default_slots,
        by_id,
        by_name,
        carried_events: 0,
        started_ms: now_ms(),
    })
}

impl Builder {
    fn standards_and_controls(&mut self, controls: Table, meta: &Table) {
        let mut names: Vec<&String> = controls.keys().collect();
        names.sort_by_key(|n| {
            (
                CANONICAL
                    .iter()
                    .position(|c| c == n)
                    .unwrap_or(CANONICAL.len()),
                n.as_str(),
            )
        });
        if names.len() > 64 {
            self.problems
                .push(invalid("controls", "more than 64 standards"));
            names.truncate(64);
        }
        for name in meta.keys() {
            if !controls.contains_key(name) {
                self.problems.push(Problem::UnknownStandard {
                    at: format!("standards.{name}"),
                    standard: name.clone(),
                });
            }
        }
        for name in names {
            let s = self.standards.len();
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
            {
                self.problems.push(invalid(
                    format!("controls.{name}"),
                    "a standard id is 1 to 32 lower-case ASCII letters, digits and '_' (an SD PARAM-NAME)",
                ));
            }
            let display_name = meta
                .get(name)
                .and_then(|m| m.get("display_name"))
                .and_then(Value::as_str)
                .unwrap_or(name);
            self.standards.push(Standard {
                id: name.as_str().into(),
                display_name: display_name.into(),
                carried_events: 0,
            });
            self.std_index.insert(name.clone(), s);
            let Some(ids) = controls[name].as_table() else {
                self.problems.push(invalid(
                    format!("controls.{name}"),
                    "expected a table of \"<id>\" = { title = \"…\" }",
                ));
                continue;
            };
            for (id, v) in ids {
                let at = format!("controls.{name}.{id:?}");
                if bad_id(id) {
                    self.problems.push(invalid(
                        &at,
                        "a control id must be non-empty, without spaces or any of , ; : \" \\ ] = |",
                    ));
                }
                let (title, title_en) = match v {
                    Value::String(t) => (t.as_str(), None),
                    Value::Table(t) => {
                        for k in t.keys() {
                            if !matches!(k.as_str(), "title" | "title_en") {
                                self.problems.push(invalid(
                                    &at,
                                    format!("unknown key `{k}`, expected `title` or `title_en`"),
                                ));
                            }
                        }
                        let title = t.get("title").and_then(Value::as_str);
                        if title.is_none() {
                            self.problems
                                .push(invalid(&at, "missing `title` (a string)"));
                        }
                        (
                            title.unwrap_or(""),
                            t.get("title_en").and_then(Value::as_str),
                        )
                    }
                    _ => {
                        self.problems
                            .push(invalid(&at, "expected { title = \"…\" }"));
                        ("", None)
                    }
                };
                let idx = self.controls.len() as u32;
                self.controls.push(Control {
                    standard: s as u32,
                    id: id.as_str().into(),
                    title: title.into(),
                    title_en: title_en.map(Into::into),
                    carried_hits: 0,
                    carried_last_seen_ms: 0,
                    counter: metrics::counter!(
                        m::COMPLIANCE_HITS_TOTAL,
                        "standard" => name.clone(),
                        "control" => id.clone()
                    ),
                });
                self.control_index.insert((s, id.clone()), idx);
            }
        }
    }

    /// A `<std> = ["id", …]` key of entry `at`: the control indices, or a problem.
    fn control_list(&mut self, at: &str, std: &str, v: &Value) -> Option<(usize, Vec<u32>)> {
        let Some(&s) = self.std_index.get(std) else {
            self.problems.push(Problem::UnknownStandard {
                at: at.to_owned(),
                standard: std.to_owned(),
            });
            return None;
        };
        let Some(items) = v.as_array() else {
            self.problems.push(invalid(
                at,
                format!("{std}: expected a list of control ids, e.g. [\"10.6.1\"]"),
            ));
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some(id) = item.as_str() else {
                self.problems
                    .push(invalid(at, format!("{std}: {item}: expected a string")));
                continue;
            };
            match self.control_index.get(&(s, id.to_owned())) {
                Some(&c) if !out.contains(&c) => out.push(c),
                Some(_) => {}
                None => self.problems.push(Problem::UnknownControl {
                    at: at.to_owned(),
                    standard: std.to_owned(),
                    id: id.to_owned(),
                }),
            }
        }
        Some((s, out))
    }

    fn entries(&mut self, v: Option<Value>, key: &str) -> Vec<Table> {
        match v {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .into_iter()
                .enumerate()
                .filter_map(|(i, e)| match e {
                    Value::Table(t) => Some(t),
                    _ => {
                        self.problems
                            .push(invalid(format!("{key}[{}]", i + 1), "expected a table"));
                        None
                    }
                })
                .collect(),
            Some(_) => {
                self.problems
                    .push(invalid(key, format!("expected [[{key}]] tables")));
                Vec::new()
            }
        }
    }

    /// `[[map]]` rows → per pair, per standard, the default control indices.
    fn defaults(&mut self, v: Option<Value>) -> Vec<Option<PerStd>> {
        let mut out: Vec<Option<PerStd>> = vec![None; PAIRS];
        for (i, row) in self.entries(v, "map").into_iter().enumerate() {
            let lt = row.get("log_type").and_then(Value::as_str).unwrap_or("");
            let cat = row.get("category").and_then(Value::as_str).unwrap_or("");
            let at = format!("map[{}] ({lt}/{cat})", i + 1);
            let pair = LogType::from_name(lt).and_then(|l| {
                let c = Category::for_log_type(l, cat)?;
                ALL_PAIRS.iter().position(|&p| p == (l, c))
            });
            let Some(p) = pair else {
                self.problems.push(invalid(
                    &at,
                    "log_type and category must name a pair of event.md (e.g. detect/web)",
                ));
                continue;
            };
            if out[p].is_some() {
                self.problems.push(invalid(
                    &at,
                    "a second row for the same log_type and category",
                ));
                continue;
            }
            let mut per: PerStd = vec![Vec::new(); self.standards.len()];
            for (k, v) in &row {
                if matches!(k.as_str(), "log_type" | "category") {
                    continue;
                }
                if let Some((s, ids)) = self.control_list(&at, k, v) {
                    per[s] = ids;
                }
            }
            out[p] = Some(per);
        }
        out
    }

    /// `[[filter]]` entries → per filter id and name, per pair, a slot.
    fn filters(
        &mut self,
        v: Option<Value>,
        defaults: &[Option<PerStd>],
    ) -> (FilterTable, FilterTable) {
        // Per key and pair: (specificity, entry number) of the entry that set the cell.
        type Claims = HashMap<String, [(u8, usize); PAIRS]>;
        let mut tables: [(FilterTable, Claims); 2] = Default::default();
        for (i, e) in self.entries(v, "filter").into_iter().enumerate() {
            let n = i + 1;
            let text = |k: &str| match e.get(k) {
                None => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(format!("{k}: expected a non-empty string")),
            };
            let mut strings = Vec::new();
            for k in ["filter_id", "filter_name", "log_type", "category", "note"] {
                match text(k) {
                    Ok(v) => strings.push(v),
                    Err(msg) => {
                        self.problems.push(invalid(format!("filter[{n}]"), msg));
                        strings.push(None);
                    }
                }
            }
            let [id, name, lt, cat, _note]: [Option<String>; 5] =
                strings.try_into().expect("five keys");
            let at = match (&id, &name) {
                (Some(id), _) => format!("filter[{n}] {id:?}"),
                (None, Some(nm)) => format!("filter[{n}] {nm:?}"),
                (None, None) => {
                    self.problems.push(invalid(
                        format!("filter[{n}]"),
                        "needs filter_id or filter_name",
                    ));
                    continue;
                }
            };
            let extend = match e.get("extend") {
                None => false,
                Some(Value::Boolean(b)) => *b,
                Some(_) => {
                    self.problems
                        .push(invalid(&at, "extend: expected true or false"));
                    false
                }
            };
            let log_type = match lt.as_deref().map(|l| (l, LogType::from_name(l))) {
                None => None,
                Some((_, Some(l))) => Some(l),
                Some((l, None)) => {
                    self.problems.push(invalid(
                        &at,
                        format!("log_type {l:?}: expected detect, defense or usage"),
                    ));
                    continue;
                }
            };
            let scope: Vec<usize> = (0..PAIRS)
                .filter(|&p| {
                    let (l, c) = ALL_PAIRS[p];
                    log_type.is_none_or(|x| x == l) && cat.as_deref().is_none_or(|x| x == c.name())
                })
                .collect();
            if scope.is_empty() {
                self.problems.push(invalid(
                    &at,
                    format!(
                        "category {:?} is not a category of {}",
                        cat.as_deref().unwrap_or(""),
                        lt.as_deref().unwrap_or("any log type")
                    ),
                ));
                continue;
            }
            let mut listed: Vec<(usize, Vec<u32>)> = Vec::new();
            for (k, v) in &e {
                if matches!(
                    k.as_str(),
                    "filter_id" | "filter_name" | "log_type" | "category" | "note" | "extend"
                ) {
                    continue;
                }
                if let Some(l) = self.control_list(&at, k, v) {
                    listed.push(l);
                }
            }
            self.sources.push(Source::Filter {
                id: id.as_deref().map(Into::into),
                name: name.as_deref().map(Into::into),
            });
            let source = (self.sources.len() - 1) as u32;
            let specificity = u8::from(log_type.is_some()) + u8::from(cat.is_some());
            for &p in &scope {
                let mut per: PerStd = defaults[p]
                    .clone()
                    .unwrap_or_else(|| vec![Vec::new(); self.standards.len()]);
                for (s, ids) in &listed {
                    if extend {
                        for c in ids {
                            if !per[*s].contains(c) {
                                per[*s].push(*c);
                            }
                        }
                    } else {
                        per[*s] = ids.clone();
                    }
                }
                let set = self.intern(&per);
                let slot = self.slot(source, set);
                for (key, (table, claims)) in [&id, &name].into_iter().zip(tables.iter_mut()) {
                    let Some(key) = key else { continue };
                    let claim = claims.entry(key.clone()).or_insert([(0, 0); PAIRS]);
                    let (spec, by) = claim[p];
                    if by != 0 && spec == specificity {
                        let (l, c) = ALL_PAIRS[p];
                        self.problems.push(invalid(
                            &at,
                            format!(
                                "{key:?} for {}/{} is already mapped by filter[{by}]",
                                l.name(),
                                c.name()
                            ),
                        ));
                        continue;
                    }
                    if by == 0 || spec < specificity {
                        claim[p] = (specificity, n);
                        table
                            .entry(key.as_str().into())
                            .or_insert_with(|| Box::new([None; PAIRS]))[p] = Some(slot);
                    }
                }
            }
        }
        let [(by_id, _), (by_name, _)] = tables;
        (by_id, by_name)
    }

    /// The interned set for `per` (standards in canonical order, ids in file order).
    fn intern(&mut self, per: &PerStd) -> u32 {
        let ids: Vec<u32> = per.iter().flatten().copied().collect();
        if let Some(&i) = self.set_index.get(&ids) {
            return i;
        }
        let (mut text, mut sd, mut standards) = (String::new(), String::new(), 0u64);
        for (s, list) in per.iter().enumerate().filter(|(_, l)| !l.is_empty()) {
            standards |= 1 << s;
            let std = &self.standards[s].id;
            if !text.is_empty() {
                text.push(';');
            }
            text.push_str(std);
            text.push(':');
            sd.push(' ');
            sd.push_str(std);
            sd.push_str("=\"");
            for (j, &c) in list.iter().enumerate() {
                if j > 0 {
                    text.push(',');
                    sd.push(',');
                }
                // Ids are checked free of `"`, `\` and `]`: no SD escaping needed.
                text.push_str(&self.controls[c as usize].id);
                sd.push_str(&self.controls[c as usize].id);
            }
            sd.push('"');
        }
        let i = self.sets.len() as u32;
        self.sets.push(Controls {
            ids: ids.clone().into(),
            standards,
            text: text.into(),
            sd_params: sd.into(),
        });
        self.set_index.insert(ids, i);
        i
    }

    fn slot(&mut self, source: u32, set: u32) -> u32 {
        *self.slot_index.entry((source, set)).or_insert_with(|| {
            self.slots.push(Slot {
                source,
                set,
                hits: AtomicU64::new(0),
                last_seen_ms: AtomicI64::new(0),
                carried: 0,
            });
            (self.slots.len() - 1) as u32
        })
    }
}

/// The pairs, by name, for reports.
pub(super) fn pair_name(p: usize) -> String {
    let (l, c) = ALL_PAIRS[p];
    format!("{}/{}", l.name(), c.name())
}
