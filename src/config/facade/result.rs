//! An async route's `result` and `failure` tables: where a finished job's
//! answer is, and what a failed one answers.

use std::ops::Range;

use http::StatusCode;

use super::defaults;
use super::values::parse_pointer;
use crate::config::context::Cx;
use crate::config::raw::RawAsync;
use crate::config::template::Template;
use crate::config::ConfigError;

#[derive(Debug, Clone)]
pub enum ResultSource {
    /// The final status answer itself.
    StatusBody,
    /// A JSON value inside the final status answer.
    BodyPointer(String),
    /// A URL at a JSON pointer of the final status answer.
    UrlPointer(String),
    /// A URL built from the status URL and the status body.
    UrlTemplate(Template),
    /// GET the URI the client asked for.
    OriginalUri,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub status: StatusCode,
    pub pointers: Vec<String>,
}

impl Cx<'_> {
    pub(super) fn result(
        &self,
        raw: &RawAsync,
        table: &Range<usize>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<ResultSource, ConfigError> {
        let r = &raw.result;
        let from = r
            .from
            .as_ref()
            .map_or("status-body", |f| f.get_ref().as_str());
        let span = r.from.as_ref().map_or(table.clone(), |f| f.span());
        let missing = |what: &str| {
            self.error(
                span.clone(),
                at("result.from"),
                format!("result.from = {from:?} needs result.{what}"),
            )
        };
        let pointer = || match &r.pointer {
            Some(p) => self.value(p, || at("result.pointer"), parse_pointer),
            None => Err(missing("pointer")),
        };
        Ok(match from {
            "status-body" => ResultSource::StatusBody,
            "original-uri" => ResultSource::OriginalUri,
            "body-pointer" => ResultSource::BodyPointer(pointer()?),
            "url-pointer" => ResultSource::UrlPointer(pointer()?),
            "url-template" => match &r.template {
                Some(t) => ResultSource::UrlTemplate(self.value(t, || at("result.template"), |t| {
                    Template::parse(t, &["status_url", "job_id"])
                })?),
                None => return Err(missing("template")),
            },
            other => {
                return Err(self.error(
                    span,
                    at("result.from"),
                    format!("{other:?} is not one of \"status-body\", \"body-pointer\", \"url-pointer\", \"url-template\", \"original-uri\""),
                ))
            }
        })
    }

    pub(super) fn failure(
        &self,
        raw: &RawAsync,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Failure, ConfigError> {
        Ok(Failure {
            status: match &raw.failure.status {
                None => StatusCode::from_u16(defaults::FAILURE_STATUS)
                    .unwrap_or(StatusCode::BAD_GATEWAY),
                Some(s) => self.status(s, || at("failure.status"), 400..=599)?,
            },
            pointers: self.pointers(
                raw.failure.pointers.as_ref(),
                |i| at(&format!("failure.pointers[{i}]")),
                &defaults::FAILURE_POINTERS,
            )?,
        })
    }
}
