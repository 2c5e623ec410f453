//! Log throttling: at most one line per key per interval, so a flood of bad events or a dead
//! receiver cannot flood the log (event.md: "logged once per reason per minute").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Remembers when each key was last logged.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Throttle {
    /// A throttle letting one line per key through every `every`.
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed)` when a line for `key` may be logged now, with the number of lines
    /// suppressed since the last one; `None` when it must be skipped.
    pub fn allow(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get_mut(key) {
            Some((at, skipped)) if now.duration_since(*at) < self.every => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                let n = *skipped;
                *at = now;
                *skipped = 0;
                Some(n)
            }
            None => {
                last.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval() {
        let t = Throttle::new(Duration::from_millis(30));
        assert_eq!(t.allow("a"), Some(0));
        assert_eq!(t.allow("a"), None);
        assert_eq!(t.allow("b"), Some(0));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(t.allow("a"), Some(1));
    }
}
