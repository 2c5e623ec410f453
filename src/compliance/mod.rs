//! Compliance linking (compliance.md): the mapping file → per-event controls, counted.
//!
//! Everything is resolved when the file loads: each (log type, category) default and each
//! registered filter (per pair it applies to) points at one interned [`Controls`], whose wire
//! forms (`std:id,id;std:id` and the SD parameters) are formatted once. [`Compliance::lookup`]
//! is two hash probes by `&str`, one counter and one time stored on the slot it lands on: it
//! never allocates. The per-control, per-standard and overall totals follow from the slots'
//! counts (a slot's controls are fixed), so they are summed when read (`Totals`) instead of
//! counted per event: an event maps to a dozen controls, and counting each cost 242 ns a
//! lookup (criterion) against 28 now.

mod load;
mod report;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::ComplianceMode;
use crate::event::{Event, Field, ALL_PAIRS};

pub use load::{LoadError, Problem};

/// Index of a (log type, category) pair in [`ALL_PAIRS`].
type Pair = usize;
const PAIRS: usize = ALL_PAIRS.len();

/// Registered filters by id or by name: the slot per pair. Probed with every event's filter id
/// and name, so with foldhash (seeded per process) rather than SipHash; only the mapping file
/// inserts keys, so an event cannot grow it.
type FilterTable = HashMap<Box<str>, Box<[Option<u32>; PAIRS]>, foldhash::fast::RandomState>;

/// The controls one event is evidence for, with their wire forms formatted once at load.
#[derive(Debug)]
pub struct Controls {
    /// Indices into [`Compliance`]'s control table, standards in canonical order.
    ids: Box<[u32]>,
    /// Bit `s` set when standard `s` has a control here.
    standards: u64,
    /// `pci_dss_3_2_1:10.6.1,11.4;isms_p:2.11.3`.
    text: Box<str>,
    /// ` pci_dss_3_2_1="10.6.1,11.4" isms_p="2.11.3"`: the PARAMs of the RFC 5424 SD
    /// element, each with its leading SP, values escaped for SD.
    sd_params: Box<str>,
}

impl Controls {
    /// The `std:id,id;std:id` form (CEF `flexString1`, TEXT ` | compliance=`, tickets).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Each (standard, control id), in the order of [`Controls::as_str`] (tickets list them).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.text
            .split(';')
            .filter_map(|part| part.split_once(':'))
            .flat_map(|(std, ids)| {
                ids.split(',')
                    .filter(|id| !id.is_empty())
                    .map(move |id| (std, id))
            })
    }

    /// The SD-PARAMs of the `compliance@<PEN>` element, each preceded by one SP.
    pub fn sd_params(&self) -> &str {
        &self.sd_params
    }

    /// Number of controls.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is no control (never true for a set [`Compliance::lookup`] returns).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One standard (`[controls.<id>]`, with `[standards.<id>]` metadata when present).
#[derive(Debug)]
struct Standard {
    id: Box<str>,
    display_name: Box<str>,
    /// Events mapped to at least one of its controls by the mappings this one replaced.
    carried_events: u64,
}

/// One control of one standard.
#[derive(Debug)]
struct Control {
    standard: u32,
    id: Box<str>,
    title: Box<str>,
    title_en: Option<Box<str>>,
    /// Hits counted by the mappings this one replaced.
    carried_hits: u64,
    /// ms since the epoch; 0 = never.
    carried_last_seen_ms: i64,
    /// `compliance_hits_total`, brought up to date by [`Compliance::publish_metrics`].
    counter: metrics::Counter,
}

/// Where a mapping came from: a registered filter or a category default.
#[derive(Debug, Clone)]
enum Source {
    Filter {
        id: Option<Box<str>>,
        name: Option<Box<str>>,
    },
    Default(Pair),
}

/// A [`Source`] by value, to match sources across a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey<'a> {
    Filter(Option<&'a str>, Option<&'a str>),
    Default(Pair),
}

impl<'a> SourceKey<'a> {
    fn of(s: &'a Source) -> Self {
        match s {
            Source::Filter { id, name } => SourceKey::Filter(id.as_deref(), name.as_deref()),
            Source::Default(p) => SourceKey::Default(*p),
        }
    }
}

/// One (source, controls) combination; lookups land on a slot and count it.
#[derive(Debug)]
struct Slot {
    source: u32,
    set: u32,
    /// Events that landed here under this mapping.
    hits: AtomicU64,
    /// ms since the epoch of the last one; 0 = never.
    last_seen_ms: AtomicI64,
    /// Hits of the same source and controls under the mappings this one replaced.
    carried: u64,
}

/// The running totals, summed from the slots (and what reloads carried over).
#[derive(Debug)]
struct Totals {
    /// Per control (index into the control table): hits and last seen (ms, 0 = never).
    hits: Vec<u64>,
    last_seen_ms: Vec<i64>,
    /// Per standard: events mapped to at least one of its controls.
    standard_events: Vec<u64>,
    /// Events mapped to at least one control.
    events: u64,
}

/// A loaded, validated mapping file and the running compliance counts.
#[derive(Debug)]
pub struct Compliance {
    mode: ComplianceMode,
    standards: Vec<Standard>,
    controls: Vec<Control>,
    sets: Vec<Controls>,
    sources: Vec<Source>,
    slots: Vec<Slot>,
    /// Category default per pair (`mode = "all"`, and the base of registered filters).
    defaults: [Option<u32>; PAIRS],
    by_id: FilterTable,
    by_name: FilterTable,
    /// Events mapped to at least one control by the mappings this one replaced.
    carried_events: u64,
    started_ms: i64,
}

/// Index of a pair in [`ALL_PAIRS`], computed without a search.
fn pair_of(ev: &Event<'_>) -> Pair {
    const TABLE: [[u8; crate::event::Category::COUNT]; 3] = {
        let mut t = [[u8::MAX; crate::event::Category::COUNT]; 3];
        let mut i = 0;
        while i < ALL_PAIRS.len() {
            let (l, c) = ALL_PAIRS[i];
            t[l as usize][c as usize] = i as u8;
            i += 1;
        }
        t
    };
    TABLE[ev.log_type as usize][ev.category as usize] as usize
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The wall clock to a tick of the kernel (a few ms), for `last_seen` on every mapped event:
/// `CLOCK_REALTIME_COARSE` reads the time of the last tick (measured 11 ns here) where
/// `SystemTime::now` reads the hardware clock (38–44 ns).
fn coarse_now_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return now_ms();
    }
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

impl Compliance {
    /// Loads and validates a mapping file; registers one `compliance_hits_total` series per
    /// control.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or an entry is invalid; every problem names the
    /// entry and the standard or control id.
    pub fn load(path: &Path, mode: ComplianceMode) -> Result<Self, LoadError> {
        let src = std::fs::read_to_string(path).map_err(|e| LoadError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_toml_str(&src, mode).map_err(|e| e.in_file(path))
    }

    /// As [`Compliance::load`], from the file's text.
    ///
    /// # Errors
    /// As [`Compliance::load`].
    pub fn from_toml_str(src: &str, mode: ComplianceMode) -> Result<Self, LoadError> {
        load::build(src, mode)
    }

    /// The mode it was loaded with.
    pub fn mode(&self) -> ComplianceMode {
        self.mode
    }

    /// The controls of `ev` without counting (tickets, tests).
    pub fn peek(&self, ev: &Event<'_>) -> Option<&Controls> {
        let set = &self.sets[self.slots[self.slot(ev)? as usize].set as usize];
        (!set.is_empty()).then_some(set)
    }

    /// The controls of `ev`, counted on the slot it lands on (summed into
    /// `compliance_hits_total` and the `/api/compliance` totals when those are read). `None`
    /// when the event maps to nothing (in `registered` mode: its filter is not registered).
    /// Allocation-free.
    pub fn lookup(&self, ev: &Event<'_>) -> Option<&Controls> {
        let slot = &self.slots[self.slot(ev)? as usize];
        let set = &self.sets[slot.set as usize];
        if set.is_empty() {
            // A registered filter whose lists were all emptied on purpose.
            return None;
        }
        slot.hits.fetch_add(1, Ordering::Relaxed);
        slot.last_seen_ms.store(coarse_now_ms(), Ordering::Relaxed);
        Some(set)
    }

    /// The running totals: this mapping's slots summed per control and per standard, plus
    /// what the mappings it replaced carried over.
    fn totals(&self) -> Totals {
        let mut t = Totals {
            hits: self.controls.iter().map(|c| c.carried_hits).collect(),
            last_seen_ms: self
                .controls
                .iter()
                .map(|c| c.carried_last_seen_ms)
                .collect(),
            standard_events: self.standards.iter().map(|s| s.carried_events).collect(),
            events: self.carried_events,
        };
        for slot in &self.slots {
            let hits = slot.hits.load(Ordering::Relaxed);
            if hits == 0 {
                continue;
            }
            let seen = slot.last_seen_ms.load(Ordering::Relaxed);
            let set = &self.sets[slot.set as usize];
            for &c in set.ids.iter() {
                t.hits[c as usize] += hits;
                t.last_seen_ms[c as usize] = t.last_seen_ms[c as usize].max(seen);
            }
            let mut bits = set.standards;
            while bits != 0 {
                t.standard_events[bits.trailing_zeros() as usize] += hits;
                bits &= bits - 1;
            }
            // Only slots with controls are counted (`lookup`), so every hit is a mapped event.
            t.events += hits;
        }
        t
    }

    /// Brings the `compliance_hits_total` series up to the totals; called before `/metrics`
    /// is rendered (the totals are not counted per event, see the module's doc).
    pub fn publish_metrics(&self) {
        for (c, hits) in self.controls.iter().zip(self.totals().hits) {
            c.counter.absolute(hits);
        }
    }

    fn slot(&self, ev: &Event<'_>) -> Option<u32> {
        let p = pair_of(ev);
        let registered =
            |map: &FilterTable, f| ev.text(f).and_then(|k| map.get(k)).and_then(|t| t[p]);
        registered(&self.by_id, Field::FilterId)
            .or_else(|| registered(&self.by_name, Field::FilterName))
            .or_else(|| match self.mode {
                ComplianceMode::All => self.defaults[p],
                ComplianceMode::Registered => None,
            })
    }

    /// Takes over the running totals of `old` (the mapping this one replaces on reload), so
    /// that `/api/compliance` keeps counting "since start": per control by (standard, id), per
    /// standard, and per filter or default whose controls did not change. Call it before this
    /// mapping counts anything. (`compliance_hits_total` keeps its series: same labels.)
    pub fn carry_counts_from(&mut self, old: &Compliance) {
        let totals = old.totals();
        self.started_ms = self.started_ms.min(old.started_ms);
        self.carried_events += totals.events;
        for s in &mut self.standards {
            if let Some(i) = old.standards.iter().position(|o| o.id == s.id) {
                s.carried_events += totals.standard_events[i];
            }
        }
        let old_controls: HashMap<(&str, &str), usize> = old
            .controls
            .iter()
            .enumerate()
            .map(|(i, c)| ((&*old.standards[c.standard as usize].id, &*c.id), i))
            .collect();
        for c in &mut self.controls {
            let key = (&*self.standards[c.standard as usize].id, &*c.id);
            if let Some(&i) = old_controls.get(&key) {
                c.carried_hits += totals.hits[i];
                c.carried_last_seen_ms = c.carried_last_seen_ms.max(totals.last_seen_ms[i]);
            }
        }
        let old_slots: HashMap<(SourceKey<'_>, &str), u64> = old
            .slots
            .iter()
            .map(|s| {
                let key = SourceKey::of(&old.sources[s.source as usize]);
                let hits = s.hits.load(Ordering::Relaxed) + s.carried;
                ((key, old.sets[s.set as usize].as_str()), hits)
            })
            .collect();
        for s in &mut self.slots {
            let key = SourceKey::of(&self.sources[s.source as usize]);
            if let Some(&h) = old_slots.get(&(key, self.sets[s.set as usize].as_str())) {
                s.carried += h;
            }
        }
    }

    /// Number of registered filter entries (ids and names).
    pub fn registered_filters(&self) -> usize {
        self.sources
            .iter()
            .filter(|s| matches!(s, Source::Filter { .. }))
            .count()
    }
}
