//! Token bucket pacing one ticket system: `rate_per_minute` tokens a minute, at most `burst`
//! saved up. Time is passed in, so tests need no clock.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    /// Full at `now`. `rate_per_minute` and `burst` are at least 1 (the config loader checks).
    pub fn new(rate_per_minute: u32, burst: u32, now: Instant) -> Self {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            capacity,
            tokens: capacity,
            per_sec: f64::from(rate_per_minute.max(1)) / 60.0,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// Takes one token, or says how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }

    /// Tokens available at `now` (rounded down).
    pub fn available(&mut self, now: Instant) -> u32 {
        self.refill(now);
        self.tokens as u32
    }

    /// Empties the bucket (after the server said "slow down").
    pub fn drain(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, 3, t0);
        for _ in 0..3 {
            assert_eq!(b.try_take(t0), Ok(()));
        }
        let wait = b.try_take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(
            b.try_take(t0 + Duration::from_millis(999)).map_err(|_| ()),
            Err(())
        );
        assert_eq!(b.try_take(t0 + Duration::from_millis(1000)), Ok(()));
        // Never more than the burst saved up.
        assert_eq!(b.available(t0 + Duration::from_secs(3600)), 3);
        b.drain(t0 + Duration::from_secs(3600));
        assert_eq!(b.available(t0 + Duration::from_secs(3600)), 0);
    }
}
