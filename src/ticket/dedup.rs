//! The dedup window: a dedup key (the values of the `dedup_key` fields) or an event id seen
//! within `dedup_window_s` adds nothing. Event ids are remembered for at least
//! [`MIN_ID_WINDOW`] even when key dedup is off, so that a redelivered event (at-least-once)
//! is not ticketed twice.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::description::TicketEvent;

/// How long event ids are remembered at least.
pub const MIN_ID_WINDOW: Duration = Duration::from_secs(3600);

/// Keys and ids seen, with when they were first seen.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    fields: Vec<String>,
    keys: HashMap<String, Instant>,
    ids: HashMap<String, Instant>,
    next_prune: usize,
}

/// Why an event adds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The same event id within the window.
    EventId,
    /// The same dedup key within the window.
    Key,
}

impl Dedup {
    /// `window` 0 turns key dedup off (ids are still remembered for [`MIN_ID_WINDOW`]).
    pub fn new(window: Duration, fields: &[String]) -> Self {
        Dedup {
            window,
            fields: fields.to_vec(),
            keys: HashMap::new(),
            ids: HashMap::new(),
            next_prune: 1024,
        }
    }

    /// The dedup key of an event: its `dedup_key` field values, unit-separated. `None` when
    /// key dedup is off or the event has none of the fields.
    pub fn key_of(&self, get: impl Fn(&str) -> Option<String>) -> Option<String> {
        if self.window.is_zero() || self.fields.is_empty() {
            return None;
        }
        let mut k = String::new();
        let mut any = false;
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                k.push('\u{1f}');
            }
            if let Some(v) = get(f) {
                any = true;
                k.push_str(&v);
            }
        }
        // An event with none of the fields is not "the same" as every other such event.
        any.then_some(k)
    }

    /// Checks and, when new, remembers: `Ok(key)` to go ahead (the key to [`Dedup::forget`] if
    /// the ticket fails), `Err(why)` when it adds nothing.
    pub fn check(
        &mut self,
        id: &str,
        key: Option<String>,
        now: Instant,
    ) -> Result<Option<String>, Seen> {
        self.prune(now);
        let id_window = self.window.max(MIN_ID_WINDOW);
        if self
            .ids
            .get(id)
            .is_some_and(|&t| now.duration_since(t) < id_window)
        {
            return Err(Seen::EventId);
        }
        if let Some(k) = &key {
            if self
                .keys
                .get(k)
                .is_some_and(|&t| now.duration_since(t) < self.window)
            {
                return Err(Seen::Key);
            }
            self.keys.insert(k.clone(), now);
        }
        self.ids.insert(id.to_owned(), now);
        Ok(key)
    }

    /// Forgets a key whose ticket failed, so that the next event with it may try again. The
    /// event id stays remembered.
    pub fn forget(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// A convenience for owned events.
    pub fn key_of_event(&self, ev: &TicketEvent) -> Option<String> {
        self.key_of(|f| ev.get(f).map(str::to_owned))
    }

    fn prune(&mut self, now: Instant) {
        if self.keys.len() + self.ids.len() < self.next_prune {
            return;
        }
        let (w, iw) = (self.window, self.window.max(MIN_ID_WINDOW));
        self.keys.retain(|_, t| now.duration_since(*t) < w);
        self.ids.retain(|_, t| now.duration_since(*t) < iw);
        self.next_prune = ((self.keys.len() + self.ids.len()) * 2).max(1024);
    }

    /// Entries held (keys + ids).
    pub fn len(&self) -> usize {
        self.keys.len() + self.ids.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids_within_the_window() {
        let t0 = Instant::now();
        let mut d = Dedup::new(
            Duration::from_secs(60),
            &["filterId".into(), "serverIp".into()],
        );
        let k =
            |f: &str, s: &str| d.key_of(|n| Some(if n == "filterId" { f } else { s }.to_owned()));
        let (k1, k2) = (k("F1", "10.0.0.1"), k("F1", "10.0.0.2"));
        assert_eq!(d.check("e1", k1.clone(), t0), Ok(k1.clone()));
        assert_eq!(d.check("e2", k1.clone(), t0), Err(Seen::Key));
        assert_eq!(d.check("e3", k2.clone(), t0), Ok(k2));
        assert_eq!(d.check("e1", None, t0), Err(Seen::EventId));
        let later = t0 + Duration::from_secs(61);
        assert_eq!(d.check("e4", k1.clone(), later), Ok(k1.clone()));
        // Ids outlive a short key window.
        assert_eq!(d.check("e1", None, later), Err(Seen::EventId));
        d.forget(k1.as_deref().unwrap());
        assert_eq!(d.check("e5", k1.clone(), later), Ok(k1));
        assert_eq!(d.key_of(|_| None), None, "no dedup field present: no key");
    }

    #[test]
    fn window_zero_dedups_only_ids() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::ZERO, &["filterId".into()]);
        assert_eq!(d.key_of(|_| Some("x".into())), None);
        assert_eq!(d.check("a", None, t0), Ok(None));
        assert_eq!(d.check("b", None, t0), Ok(None));
        assert_eq!(d.check("a", None, t0), Err(Seen::EventId));
    }
}
