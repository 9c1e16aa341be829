//! An async route's `poll` table: how often the status monitor is asked,
//! backing off from a first quick look towards a ceiling.

use std::ops::Range;
use std::time::Duration;

use super::defaults;
use crate::config::context::Cx;
use crate::config::raw::{RawAsync, RawPoll};
use crate::config::ConfigError;

#[derive(Debug, Clone)]
pub struct PollSchedule {
    pub initial: Duration,
    pub factor: f64,
    /// Fraction of each delay drawn at random, so many clients waiting on
    /// one backend do not poll in lockstep.
    pub jitter: f64,
    pub min_interval: Duration,
    pub max_interval: Duration,
    /// Per status call.
    pub timeout: Duration,
    pub max_failures: u32,
    /// Learn the route's job lengths and poll near them (see
    /// `job::adaptive`); the backend's Retry-After still wins.
    pub adaptive: bool,
}

impl Cx<'_> {
    pub(super) fn poll(
        &self,
        raw: &RawAsync,
        table: &Range<usize>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<PollSchedule, ConfigError> {
        let p = &raw.poll;
        let (min_interval, max_interval) = self.intervals(p, table, at)?;
        let factor = match &p.factor {
            None => defaults::POLL_FACTOR,
            Some(f) if (1.0..=10.0).contains(f.get_ref()) => *f.get_ref(),
            Some(f) => {
                return Err(self.error(
                    f.span(),
                    at("poll.factor"),
                    format!(
                        "{} is out of range: must be between 1.0 and 10.0",
                        f.get_ref()
                    ),
                ))
            }
        };
        let jitter = match &p.jitter {
            None => defaults::POLL_JITTER,
            Some(j) if (0.0..=1.0).contains(j.get_ref()) => *j.get_ref(),
            Some(j) => {
                return Err(self.error(
                    j.span(),
                    at("poll.jitter"),
                    format!(
                        "{} is out of range: must be between 0.0 and 1.0",
                        j.get_ref()
                    ),
                ))
            }
        };
        Ok(PollSchedule {
            initial: self.duration(
                p.initial.as_ref(),
                || at("poll.initial"),
                defaults::POLL_INITIAL,
            )?,
            factor,
            jitter,
            min_interval,
            max_interval,
            timeout: self.duration(
                p.timeout.as_ref(),
                || at("poll.timeout"),
                defaults::POLL_TIMEOUT,
            )?,
            max_failures: self.count(
                p.max_failures.as_ref(),
                || at("poll.max_failures"),
                defaults::POLL_MAX_FAILURES as usize,
                1..=1000,
            )? as u32,
            adaptive: p.adaptive.unwrap_or(true),
        })
    }

    /// `(min_interval, max_interval)`, the ceiling no lower than the floor.
    fn intervals(
        &self,
        p: &RawPoll,
        table: &Range<usize>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<(Duration, Duration), ConfigError> {
        let min_interval = self.duration(
            p.min_interval.as_ref(),
            || at("poll.min_interval"),
            defaults::POLL_MIN,
        )?;
        let max_interval = self.duration(
            p.max_interval.as_ref(),
            || at("poll.max_interval"),
            defaults::POLL_MAX,
        )?;
        if max_interval < min_interval {
            // Point at whichever bound the file set; with neither, the table.
            let span = p
                .max_interval
                .as_ref()
                .or(p.min_interval.as_ref())
                .map_or(table.clone(), |s| s.span());
            return Err(self.error(
                span,
                at("poll.max_interval"),
                format!("max_interval ({max_interval:?}) is below min_interval ({min_interval:?})"),
            ));
        }
        Ok((min_interval, max_interval))
    }
}
