//! An async route's `state` table: how a status answer says what the job
//! is doing (running, done, failed, canceled).

use http::StatusCode;
use toml::Spanned;

use super::defaults;
use super::values::parse_pointer;
use crate::config::context::Cx;
use crate::config::raw::{RawAsync, RawState};
use crate::config::ConfigError;

#[derive(Debug, Clone)]
pub struct StateRules {
    pub running_statuses: Vec<StatusCode>,
    /// Done; the result is at `Location`.
    pub redirect_statuses: Vec<StatusCode>,
    /// What a 404 from the monitor means.
    pub not_found: NotFound,
    pub reader: StateReader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFound {
    /// The job vanished: fail the request.
    Gone,
    /// The job is not known yet: keep polling.
    Running,
}

#[derive(Debug, Clone)]
pub enum StateReader {
    /// Any 2xx that is not a running status means done.
    Status,
    /// A string field whose value falls in one of these sets (lower case).
    Field {
        pointer: String,
        running: Vec<String>,
        succeeded: Vec<String>,
        failed: Vec<String>,
        canceled: Vec<String>,
    },
    /// A boolean field; once true, an error at `error_pointer` means failed.
    Done {
        pointer: String,
        error_pointer: Option<String>,
    },
}

impl Cx<'_> {
    pub(super) fn state(
        &self,
        raw: &RawAsync,
        at: &dyn Fn(&str) -> String,
    ) -> Result<StateRules, ConfigError> {
        let s = &raw.state;
        let not_found = match &s.not_found {
            None => NotFound::Gone,
            Some(v) => self.value(
                v,
                || at("state.not_found"),
                |v| match v {
                    "gone" => Ok(NotFound::Gone),
                    "running" => Ok(NotFound::Running),
                    other => Err(format!("{other:?} is not one of \"gone\", \"running\"")),
                },
            )?,
        };
        let reader = self.state_reader(s, at)?;
        Ok(StateRules {
            running_statuses: self.statuses(
                s.running_statuses.as_ref(),
                || at("state.running_statuses"),
                &defaults::RUNNING_STATUSES,
            )?,
            redirect_statuses: self.statuses(
                s.redirect_statuses.as_ref(),
                || at("state.redirect_statuses"),
                &defaults::REDIRECT_STATUSES,
            )?,
            not_found,
            reader,
        })
    }

    /// A status field, a done flag, or (neither set) the HTTP status alone.
    fn state_reader(
        &self,
        s: &RawState,
        at: &dyn Fn(&str) -> String,
    ) -> Result<StateReader, ConfigError> {
        Ok(match (&s.pointer, &s.done_pointer) {
            (Some(_), Some(done)) => {
                return Err(self.error(
                    done.span(),
                    at("state.done_pointer"),
                    "set either state.pointer (a status field) or state.done_pointer (a done flag), not both".into(),
                ))
            }
            (Some(p), None) => StateReader::Field {
                pointer: self.value(p, || at("state.pointer"), parse_pointer)?,
                running: set(&s.running, &defaults::RUNNING),
                succeeded: set(&s.succeeded, &defaults::SUCCEEDED),
                failed: set(&s.failed, &defaults::FAILED),
                canceled: set(&s.canceled, &defaults::CANCELED),
            },
            (None, Some(p)) => StateReader::Done {
                pointer: self.value(p, || at("state.done_pointer"), parse_pointer)?,
                error_pointer: match &s.error_pointer {
                    None => None,
                    Some(e) => Some(self.value(e, || at("state.error_pointer"), parse_pointer)?),
                },
            },
            (None, None) => StateReader::Status,
        })
    }
}

/// A set of state names, compared in lower case.
fn set(values: &Option<Vec<Spanned<String>>>, fallback: &[&str]) -> Vec<String> {
    match values {
        Some(v) => v.iter().map(|s| s.get_ref().to_ascii_lowercase()).collect(),
        None => fallback.iter().map(|s| (*s).to_owned()).collect(),
    }
}
