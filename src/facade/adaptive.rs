//! Adaptive polling: learn how long a route's jobs take and poll near
//! then, instead of backing off blindly.
//!
//! Fixed backoff cannot be both prompt and frugal across job lengths: a
//! factor small enough to answer within 10 % of a job's age costs dozens
//! of polls for a minute-long job. A route's jobs are usually alike,
//! though, so each finished job leaves an estimate of when it completed
//! (between its last "running" and first "done" answer), and the next job
//! is polled first just before most jobs were done, then every tenth of its
//! age: an answer within 10 % of the job's length, in two or three polls.
//! Nothing is learned from jobs whose backend sets `Retry-After`: its word
//! wins.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// Finished jobs remembered per route.
const WINDOW: usize = 32;
/// Jobs seen before the estimate is trusted.
const WARM_UP: usize = 3;

/// What a route's recent jobs say about the next one.
#[derive(Default)]
pub(crate) struct Timing {
    /// Completion-time estimates of recent jobs, newest last.
    recent: Mutex<VecDeque<Duration>>,
}

/// When to poll a job of a route that has history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Age of the job at its first poll: just before most jobs completed.
    pub(crate) first: Duration,
}

impl Timing {
    /// Notes a finished job: running when `lo` old, done when `hi` old
    /// (`lo` zero: done at its first poll, so it took at most `hi`).
    pub(crate) fn record(&self, lo: Duration, hi: Duration) {
        // Done at the first poll says only "at most `hi`": the midpoint
        // would halve the estimate, `hi` itself would never learn that jobs
        // got faster. A little under `hi` probes downwards until a poll
        // finds a job still running, which pins the estimate again.
        let estimate = if lo.is_zero() {
            hi.mul_f64(0.9)
        } else {
            lo + (hi.saturating_sub(lo)) / 2
        };
        let mut recent = crate::sync::lock(&self.recent);
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back(estimate);
    }

    /// The plan for the next job, once the route has history.
    pub(crate) fn plan(&self) -> Option<Plan> {
        let recent = crate::sync::lock(&self.recent);
        if recent.len() < WARM_UP {
            return None;
        }
        let mut sorted: Vec<Duration> = recent.iter().copied().collect();
        sorted.sort_unstable();
        // The 10th percentile: few jobs are done before the first poll.
        Some(Plan {
            first: sorted[sorted.len() / 10],
        })
    }
}

impl Plan {
    /// The delay before the next poll of a job `age` old: to the first
    /// poll, then a tenth of the age, so the answer comes within 10 % of
    /// the job's length and an outlier costs few extra polls.
    pub(crate) fn next(&self, age: Duration) -> Duration {
        if age < self.first {
            return self.first - age;
        }
        age / 10
    }

    /// Whether the next delay is the long wait for the first poll, which
    /// may exceed the route's `max_interval`: it is learned, not guessed.
    pub(crate) fn before_first(&self, age: Duration) -> bool {
        age < self.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn learns_after_a_few_jobs() {
        let t = Timing::default();
        t.record(ms(900), ms(1100));
        t.record(ms(950), ms(1050));
        assert_eq!(t.plan(), None, "too little history");
        t.record(ms(1000), ms(1000));
        let plan = t.plan().unwrap();
        assert_eq!(plan.first, ms(1000));
    }

    #[test]
    fn polls_at_the_estimate_then_at_a_tenth_of_the_age() {
        let plan = Plan { first: ms(10_000) };
        assert_eq!(plan.next(ms(0)), ms(10_000));
        assert!(plan.before_first(ms(0)));
        assert_eq!(plan.next(ms(10_000)), ms(1_000));
        assert!(!plan.before_first(ms(10_000)));
        assert_eq!(
            plan.next(ms(20_000)),
            ms(2_000),
            "an outlier: a tenth of its age"
        );
    }

    #[test]
    fn done_at_the_first_poll_probes_a_little_earlier() {
        let t = Timing::default();
        for _ in 0..3 {
            t.record(ms(0), ms(1000));
        }
        assert_eq!(t.plan().unwrap().first, ms(900));
    }
}
