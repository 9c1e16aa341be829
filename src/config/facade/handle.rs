//! An async route's `job` and `handle` tables: which submit answers are
//! jobs, and where such an answer names the job's status monitor.

use std::ops::Range;

use http::header::HeaderName;
use http::StatusCode;
use toml::Spanned;

use super::defaults;
use super::values::{header_name, parse_pointer};
use crate::config::context::Cx;
use crate::config::presets;
use crate::config::raw::{OneOrMany, RawAsync};
use crate::config::template::Template;
use crate::config::ConfigError;

/// Which submit answers are jobs.
#[derive(Debug, Clone)]
pub struct JobDetect {
    pub statuses: Vec<StatusCode>,
    /// A matching status without a handle is an ordinary answer (true) or a
    /// broken one (false).
    pub needs_handle: bool,
}

#[derive(Debug, Clone)]
pub struct Handle {
    pub source: HandleSource,
    /// Where the submit body names the job; otherwise the last segment of
    /// the status URL serves as its id.
    pub id_pointer: Option<String>,
}

#[derive(Debug, Clone)]
pub enum HandleSource {
    /// The first of these headers present on the submit answer.
    Headers(Vec<HeaderName>),
    /// A URL at this JSON pointer of the submit body.
    Pointer(String),
    /// A URL built from the submit body.
    Template(Template),
    /// No status monitor: the job reports by callback alone.
    Callback,
}

impl Cx<'_> {
    pub(super) fn job(
        &self,
        raw: &RawAsync,
        at: &dyn Fn(&str) -> String,
    ) -> Result<JobDetect, ConfigError> {
        Ok(JobDetect {
            statuses: self.statuses(
                raw.job.statuses.as_ref(),
                || at("job.statuses"),
                &defaults::JOB_STATUSES,
            )?,
            needs_handle: raw.job.needs_handle.unwrap_or(false),
        })
    }

    pub(super) fn handle(
        &self,
        raw: &RawAsync,
        table: &Range<usize>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Handle, ConfigError> {
        let source = self.handle_source(raw, table, at)?;
        let id_pointer = match &raw.handle.id_pointer {
            None => None,
            Some(p) => Some(self.value(p, || at("handle.id_pointer"), parse_pointer)?),
        };
        Ok(Handle { source, id_pointer })
    }

    /// Exactly one of header, pointer and template; none at all only when
    /// the job reports by callback alone.
    fn handle_source(
        &self,
        raw: &RawAsync,
        table: &Range<usize>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<HandleSource, ConfigError> {
        let h = &raw.handle;
        Ok(match (&h.header, &h.pointer, &h.template) {
            (Some(header), None, None) => {
                HandleSource::Headers(self.handle_headers(header, table, at)?)
            }
            (None, Some(p), None) => {
                HandleSource::Pointer(self.value(p, || at("handle.pointer"), parse_pointer)?)
            }
            (None, None, Some(t)) => HandleSource::Template(self.value(
                t,
                || at("handle.template"),
                |t| Template::parse(t, &[]),
            )?),
            (None, None, None) if callback_alone(raw) => HandleSource::Callback,
            (None, None, None) => {
                return Err(self.error(
                    table.clone(),
                    at("handle"),
                    format!(
                        "an async route needs to know where the job's status URL is: set `preset` ({}) or one of handle.header, handle.pointer, handle.template",
                        presets::names().join(", ")
                    ),
                ))
            }
            _ => {
                return Err(self.error(
                    table.clone(),
                    at("handle"),
                    "set only one of handle.header, handle.pointer, handle.template".into(),
                ))
            }
        })
    }

    fn handle_headers(
        &self,
        spanned: &Spanned<OneOrMany<String>>,
        table: &Range<usize>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Vec<HeaderName>, ConfigError> {
        let mut names = Vec::new();
        for name in spanned.get_ref().clone().into_vec() {
            let name = header_name(&name)
                .map_err(|e| self.error(spanned.span(), at("handle.header"), e))?;
            names.push(name);
        }
        if names.is_empty() {
            return Err(self.error(table.clone(), at("handle.header"), "names no header".into()));
        }
        Ok(names)
    }
}

/// A callback without `+poll` needs no monitor, so no handle either.
fn callback_alone(raw: &RawAsync) -> bool {
    raw.callback.as_ref().is_some_and(|c| {
        let mode = c.get_ref().mode.as_ref();
        mode.is_none_or(|m| m.get_ref() == "callback")
    })
}
