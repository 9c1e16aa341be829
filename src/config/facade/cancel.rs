//! An async route's `cancel` table: canceling the job when nobody waits
//! for it any more.

use std::ops::Range;

use http::Method;

use super::{AsyncRoute, HandleSource};
use crate::config::context::Cx;
use crate::config::raw::RawAsync;
use crate::config::route::parse_method;
use crate::config::template::Template;
use crate::config::ConfigError;

#[derive(Debug, Clone)]
pub struct Cancel {
    pub on_disconnect: bool,
    pub on_timeout: bool,
    pub method: Method,
    pub url: Template,
}

impl Cx<'_> {
    pub(super) fn cancel(
        &self,
        raw: &RawAsync,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Cancel, ConfigError> {
        Ok(Cancel {
            on_disconnect: raw.cancel.on_disconnect.unwrap_or(false),
            on_timeout: raw.cancel.on_timeout.unwrap_or(false),
            method: match &raw.cancel.method {
                None => Method::DELETE,
                Some(m) => self.value(m, || at("cancel.method"), parse_method)?,
            },
            url: match &raw.cancel.url {
                None => Template::status_url(),
                Some(u) => self.value(
                    u,
                    || at("cancel.url"),
                    |t| Template::parse(t, &["status_url", "job_id"]),
                )?,
            },
        })
    }

    /// Without a monitor there is nothing to cancel: the stand-in status
    /// URL is the submit's own, which a DELETE must never reach.
    pub(super) fn cancel_needs_monitor(
        &self,
        route: &AsyncRoute,
        table: Range<usize>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        if matches!(route.handle.source, HandleSource::Callback)
            && (route.cancel.on_disconnect || route.cancel.on_timeout)
        {
            return Err(self.error(
                table,
                at("cancel"),
                "a job that answers by callback alone has no monitor to cancel: configure a handle, or drop cancel".into(),
            ));
        }
        Ok(())
    }
}
