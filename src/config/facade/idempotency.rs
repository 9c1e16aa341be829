//! An async route's `idempotency` table: how retries of one request find
//! the job the first one started.

use std::time::Duration;

use http::header::HeaderName;

use super::defaults;
use super::values::header_name;
use crate::config::context::Cx;
use crate::config::raw::RawAsync;
use crate::config::ConfigError;

/// How retries of one request find the job the first one started.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub header: HeaderName,
    /// Keys are scoped by this client-identity header as well as the route.
    pub scope_header: Option<HeaderName>,
    pub ttl: Duration,
    /// Answers larger than this are delivered once and not replayed.
    pub max_stored_body: usize,
}

impl Cx<'_> {
    pub(super) fn idempotency(
        &self,
        raw: &RawAsync,
        only_get: bool,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Option<Idempotency>, ConfigError> {
        let i = &raw.idempotency;
        // On by default wherever a retry could create a second job.
        if !i.enabled.unwrap_or(!only_get) {
            return Ok(None);
        }
        let header = match &i.header {
            None => HeaderName::from_static(defaults::IDEMPOTENCY_HEADER),
            Some(h) => self.value(h, || at("idempotency.header"), header_name)?,
        };
        let scope_header = match &i.scope_header {
            None => None,
            Some(h) => Some(self.value(h, || at("idempotency.scope_header"), header_name)?),
        };
        Ok(Some(Idempotency {
            header,
            scope_header,
            ttl: self.duration(
                i.ttl.as_ref(),
                || at("idempotency.ttl"),
                defaults::IDEMPOTENCY_TTL,
            )?,
            max_stored_body: self.size(
                i.max_stored_body.as_ref(),
                || at("idempotency.max_stored_body"),
                defaults::MAX_STORED_BODY,
                1..=256 * 1024 * 1024,
            )? as usize,
        }))
    }
}
