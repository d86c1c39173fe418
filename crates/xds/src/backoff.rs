//! Exponential backoff with jitter, shared by the xDS reconnect loop and the
//! certificate rotation retries.
//!
//! Jitter matters here: when istiod restarts, every proxy in the mesh loses
//! its stream at the same moment, and without jitter they would all come back
//! in lock-step.

use std::time::Duration;

use rand::Rng as _;

/// Doubling backoff between `initial` and `max`, each delay randomised by
/// `±jitter` (a fraction, e.g. `0.2` for ±20 %).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `initial`, never above `max`.
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        Backoff {
            initial,
            max,
            jitter: jitter.clamp(0.0, 1.0),
            current: initial,
        }
    }

    /// xDS reconnects: 10 ms doubling to 15 s, ±20 %.
    pub fn xds() -> Self {
        Self::new(Duration::from_millis(10), Duration::from_secs(15), 0.2)
    }

    /// Certificate fetch retries: 500 ms doubling to 150 s, ±20 %.
    pub fn certificate() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(150), 0.2)
    }

    /// The next delay (jittered), then doubles the base for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        self.jittered(base)
    }

    /// Doubles the base first, then returns it jittered: xDS's rule for a
    /// failed connection ("backoff doubled, then sleep").
    pub fn double_then_delay(&mut self) -> Duration {
        self.current = (self.current * 2).min(self.max);
        self.jittered(self.current)
    }

    /// The initial delay, jittered, and the backoff reset.
    pub fn reset_delay(&mut self) -> Duration {
        self.reset();
        self.jittered(self.initial)
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// The current (un-jittered) base delay.
    pub fn current(&self) -> Duration {
        self.current
    }

    fn jittered(&self, base: Duration) -> Duration {
        if self.jitter == 0.0 {
            return base;
        }
        let factor = rand::rng().random_range((1.0 - self.jitter)..=(1.0 + self.jitter));
        // The cap holds after jitter too: ztunnel never waits longer than `max`.
        base.mul_f64(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(40), 0.0);
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 40, 40]);
    }

    #[test]
    fn double_then_delay_starts_at_twice_the_initial() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(15), 0.0);
        assert_eq!(b.double_then_delay(), Duration::from_millis(20));
        assert_eq!(b.double_then_delay(), Duration::from_millis(40));
    }

    #[test]
    fn jitter_never_exceeds_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(15), 0.2);
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(15));
        }
    }

    #[test]
    fn reset_returns_to_initial() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1), 0.0);
        b.next_delay();
        b.next_delay();
        assert_eq!(b.reset_delay(), Duration::from_millis(10));
        assert_eq!(b.current(), Duration::from_millis(10));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let mut b = Backoff::certificate();
        for _ in 0..200 {
            b.reset();
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(400) && d <= Duration::from_millis(600),
                "{d:?}"
            );
        }
    }

    #[test]
    fn certificate_backoff_caps_at_150_seconds_plus_jitter() {
        let mut b = Backoff::certificate();
        for _ in 0..20 {
            b.next_delay();
        }
        let d = b.next_delay();
        assert!(
            d >= Duration::from_secs(120) && d <= Duration::from_secs(180),
            "{d:?}"
        );
    }
}
