//! When to poll next: the backend's `Retry-After` when it gives one (in
//! any of its spellings), else exponential backoff with jitter, always
//! within the route's min/max interval.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::config::PollSchedule;

use super::adaptive::Plan;

/// The delay a response asks for, if it asks. Millisecond headers win
/// over `Retry-After` because they are more precise; an HTTP-date in the
/// past means "now".
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The polling schedule of one job.
pub(crate) struct Schedule<'a> {
    config: &'a PollSchedule,
    /// Backoff steps taken so far.
    step: i32,
    /// The most recent `Retry-After`, kept when later answers omit it.
    retry_after: Option<Duration>,
    /// No delay shorter than this (a fallback poll beside a callback).
    floor: Option<Duration>,
    /// Learned timing of the route's jobs, with the job's start.
    plan: Option<(Plan, tokio::time::Instant)>,
}

impl<'a> Schedule<'a> {
    pub(crate) fn new(config: &'a PollSchedule) -> Self {
        Schedule {
            config,
            step: 0,
            retry_after: None,
            floor: None,
            plan: None,
        }
    }

    /// Polls by what the route's recent jobs took (see `adaptive`), for a
    /// job that started at `started`.
    pub(crate) fn with_plan(mut self, plan: Option<Plan>, started: tokio::time::Instant) -> Self {
        self.plan = plan.map(|p| (p, started));
        self
    }

    pub(crate) fn with_floor(mut self, floor: Option<Duration>) -> Self {
        self.floor = floor;
        self
    }

    /// The delay before the next poll, given what the last answer asked.
    pub(crate) fn next(&mut self, asked: Option<Duration>) -> Duration {
        if asked.is_some() {
            // The backend's word wins over anything learned.
            self.retry_after = asked;
            self.plan = None;
        }
        let delay = match (self.retry_after, &self.plan) {
            (Some(delay), _) => delay,
            (None, Some((plan, started))) => {
                let age = started.elapsed();
                if plan.before_first(age) {
                    // The learned wait to the first poll is the point; the
                    // interval cap is for guesses.
                    return plan.next(age).max(self.config.min_interval);
                }
                plan.next(age)
            }
            (None, None) => {
                let base = self.config.initial.as_secs_f64() * self.config.factor.powi(self.step);
                self.step = self.step.saturating_add(1);
                // Jitter only ever shortens a delay: spreading polls must not
                // make anyone wait longer than the schedule says.
                let jittered = base * (1.0 - self.config.jitter * fastrand::f64());
                Duration::try_from_secs_f64(jittered).unwrap_or(self.config.max_interval)
            }
        };
        let delay = delay.clamp(self.config.min_interval, self.config.max_interval);
        self.floor.map_or(delay, |floor| delay.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn schedule(jitter: f64) -> PollSchedule {
        PollSchedule {
            initial: Duration::from_millis(100),
            factor: 2.0,
            jitter,
            min_interval: Duration::from_millis(50),
            max_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            max_failures: 3,
            adaptive: false,
        }
    }

    #[test]
    fn every_spelling_of_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        h.insert("retry-after", HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        h.insert("retry-after", HeaderValue::from_str(&past).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert("x-ms-retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)));
        h.insert("retry-after-ms", HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(120)));
        h.clear();
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn backoff_grows_to_the_cap_and_retry_after_sticks() {
        let config = schedule(0.0);
        let mut s = Schedule::new(&config);
        let delays: Vec<_> = (0..6).map(|_| s.next(None).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);

        let mut s = Schedule::new(&config);
        assert_eq!(
            s.next(Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        assert_eq!(
            s.next(None),
            Duration::from_millis(300),
            "kept when omitted"
        );
        assert_eq!(
            s.next(Some(Duration::from_secs(60))),
            Duration::from_secs(1),
            "clamped to max"
        );
        assert_eq!(
            s.next(Some(Duration::ZERO)),
            Duration::from_millis(50),
            "clamped to min"
        );
    }

    #[test]
    fn jitter_only_shortens() {
        let config = schedule(0.5);
        for _ in 0..100 {
            let d = Schedule::new(&config).next(None);
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
                "{d:?}"
            );
        }
    }
}
