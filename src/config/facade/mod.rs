//! The validated `[routes.async]` table: how one route drives its job API.
//!
//! Every part of the job conversation is data here — which answers are
//! jobs, where the handle is, how a status reads, where the result is — so
//! a job API that matches no preset is still expressible in TOML alone.
//!
//! This module resolves the preset and reads the route-wide keys (waits,
//! limits, forwarded headers); each sub-table has a module of its own.

mod callback;
mod cancel;
mod handle;
mod idempotency;
mod origin;
mod poll;
mod result;
mod state;
mod values;

pub(crate) use callback::{Callback, CallbackCarrier};
pub(crate) use cancel::Cancel;
pub(crate) use handle::{Handle, HandleSource, JobDetect};
pub(crate) use idempotency::Idempotency;
pub(crate) use origin::Origin;
pub(crate) use poll::PollSchedule;
pub(crate) use result::{Failure, ResultSource};
pub use state::{NotFound, StateReader, StateRules};

use std::ops::Range;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName};
use toml::Spanned;

use super::context::Cx;
use super::presets;
use super::raw::RawAsync;
use super::ConfigError;
use origin::parse_origin;
use values::header_name;

#[derive(Debug, Clone)]
pub struct AsyncRoute {
    pub preset: Option<&'static str>,
    /// How long a client is held by default.
    pub wait: Duration,
    /// The most a client may ask for with `Prefer: wait=N`.
    pub max_wait: Duration,
    pub submit_headers: HeaderMap,
    pub poll_headers: HeaderMap,
    /// Client headers that follow the job to polls and result fetches, on
    /// the backend's own origin only.
    pub credential_headers: Vec<HeaderName>,
    /// Origins besides the backend's that followed URLs may point to.
    pub allow_origins: Vec<Origin>,
    pub max_status_body: usize,
    pub max_result_body: u64,
    /// Redirects followed when fetching a result.
    pub max_hops: usize,
    /// What a client held past the deadline receives.
    pub on_timeout: OnTimeout,
    /// Requests of this route held at once; more are shed with a 503.
    pub max_held: Option<usize>,
    /// `None`: retries are not deduplicated on this route.
    pub idempotency: Option<Idempotency>,
    /// Present: the job API calls back when the job is done (dialect F).
    pub callback: Option<Callback>,
    pub job: JobDetect,
    pub handle: Handle,
    pub state: StateRules,
    pub result: ResultSource,
    pub failure: Failure,
    pub poll: PollSchedule,
    pub cancel: Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// 504 problem+json with the job's id and status URL.
    GatewayTimeout,
    /// 202 with `Location` of a Baton-served monitor that holds again.
    Accepted,
    /// 303 to that monitor, for clients that follow redirects.
    Redirect,
}

pub mod defaults {
    //! Facade defaults, in one place for `config/example.toml`.
    use std::time::Duration;

    pub(crate) const WAIT: Duration = Duration::from_secs(30);
    pub(crate) const MAX_STATUS_BODY: u64 = 1024 * 1024;
    pub(crate) const MAX_RESULT_BODY: u64 = 64 * 1024 * 1024;
    pub(crate) const MAX_HOPS: usize = 5;
    pub(crate) const IDEMPOTENCY_HEADER: &str = "idempotency-key";
    pub(crate) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
    pub(crate) const MAX_STORED_BODY: u64 = 1024 * 1024;
    pub(crate) const CALLBACK_HEADER: &str = "x-callback-url";
    pub(crate) const SIGNATURE_HEADER: &str = "x-baton-signature";
    pub(crate) const STATUS_HEADER: &str = "x-callback-status";
    pub(crate) const CALLBACK_POLL: Duration = Duration::from_secs(30);
    pub(crate) const JOB_STATUSES: [u16; 1] = [202];
    pub(crate) const RUNNING_STATUSES: [u16; 1] = [202];
    pub(crate) const REDIRECT_STATUSES: [u16; 2] = [302, 303];
    pub(crate) const RUNNING: [&str; 9] = [
        "notstarted",
        "pending",
        "queued",
        "accepted",
        "received",
        "started",
        "running",
        "inprogress",
        "retry",
    ];
    pub(crate) const SUCCEEDED: [&str; 5] =
        ["succeeded", "success", "completed", "complete", "done"];
    pub(crate) const FAILED: [&str; 3] = ["failed", "failure", "error"];
    pub(crate) const CANCELED: [&str; 4] = ["canceled", "cancelled", "revoked", "terminated"];
    pub(crate) const FAILURE_STATUS: u16 = 502;
    pub(crate) const FAILURE_POINTERS: [&str; 2] = ["/error", "/message"];
    pub(crate) const POLL_INITIAL: Duration = Duration::from_millis(100);
    pub(crate) const POLL_FACTOR: f64 = 1.5;
    pub(crate) const POLL_JITTER: f64 = 0.2;
    pub(crate) const POLL_MIN: Duration = Duration::from_millis(50);
    pub(crate) const POLL_MAX: Duration = Duration::from_secs(5);
    pub(crate) const POLL_TIMEOUT: Duration = Duration::from_secs(10);
    pub(crate) const POLL_MAX_FAILURES: u32 = 5;
}

/// Headers that carry the client's identity: they follow the job only on
/// the backend's origin.
const CREDENTIALS: [HeaderName; 2] = [http::header::AUTHORIZATION, http::header::COOKIE];

impl Cx<'_> {
    pub(super) fn facade(
        &self,
        index: usize,
        raw: &Spanned<RawAsync>,
        only_get: bool,
    ) -> Result<AsyncRoute, ConfigError> {
        let at = |k: &str| format!("routes[{index}].async.{k}");
        // Errors about a combination of keys point at the table itself.
        let table = raw.span();
        let (preset, raw) = self.preset(raw.get_ref().clone(), &at)?;
        let (wait, max_wait) = self.waits(&raw, &table, &at)?;
        let credential_headers = self.credential_headers(&raw, &at)?;
        let allow_origins = self.allow_origins(&raw, &at)?;
        let route = AsyncRoute {
            preset,
            wait,
            max_wait,
            submit_headers: self.headers(raw.submit_headers.as_ref(), |k| {
                at(&format!("submit_headers.{k}"))
            })?,
            poll_headers: self.headers(raw.poll_headers.as_ref(), |k| {
                at(&format!("poll_headers.{k}"))
            })?,
            credential_headers,
            allow_origins,
            max_status_body: self.size(
                raw.max_status_body.as_ref(),
                || at("max_status_body"),
                defaults::MAX_STATUS_BODY,
                1..=64 * 1024 * 1024,
            )? as usize,
            max_result_body: self.size(
                raw.max_result_body.as_ref(),
                || at("max_result_body"),
                defaults::MAX_RESULT_BODY,
                1..=u64::MAX,
            )?,
            max_hops: self.count(
                raw.max_hops.as_ref(),
                || at("max_hops"),
                defaults::MAX_HOPS,
                0..=20,
            )?,
            on_timeout: self.on_timeout(&raw, &at)?,
            max_held: match &raw.max_held {
                None => None,
                Some(_) => {
                    Some(self.count(raw.max_held.as_ref(), || at("max_held"), 0, 1..=1_000_000)?)
                }
            },
            idempotency: self.idempotency(&raw, only_get, &at)?,
            callback: match &raw.callback {
                Some(c) => Some(self.callback(c, &at)?),
                None => None,
            },
            job: self.job(&raw, &at)?,
            handle: self.handle(&raw, &table, &at)?,
            state: self.state(&raw, &at)?,
            result: self.result(&raw, &table, &at)?,
            failure: self.failure(&raw, &at)?,
            poll: self.poll(&raw, &table, &at)?,
            cancel: self.cancel(&raw, &at)?,
        };
        self.cancel_needs_monitor(&route, table, &at)?;
        Ok(route)
    }

    /// The route's keys laid over its preset's, if it names one.
    fn preset(
        &self,
        route: RawAsync,
        at: &dyn Fn(&str) -> String,
    ) -> Result<(Option<&'static str>, RawAsync), ConfigError> {
        let Some(name) = &route.preset else {
            return Ok((None, route));
        };
        let Some((static_name, _)) = presets::PRESETS.iter().find(|(n, _)| n == name.get_ref())
        else {
            return Err(self.error(
                name.span(),
                at("preset"),
                format!(
                    "unknown preset {:?}; presets: [{}]",
                    name.get_ref(),
                    presets::names().join(", ")
                ),
            ));
        };
        let preset = presets::lookup(static_name).unwrap_or_default();
        Ok((Some(*static_name), presets::merge(route, preset)))
    }

    /// `(wait, max_wait)`; `max_wait` defaults to `wait`, and a ceiling
    /// below the default hold is a mistake.
    fn waits(
        &self,
        raw: &RawAsync,
        table: &Range<usize>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<(Duration, Duration), ConfigError> {
        let wait = self.duration(raw.wait.as_ref(), || at("wait"), defaults::WAIT)?;
        let max_wait = self.duration(raw.max_wait.as_ref(), || at("max_wait"), wait)?;
        if max_wait < wait {
            let span = raw.max_wait.as_ref().map_or(table.clone(), |m| m.span());
            return Err(self.error(
                span,
                at("max_wait"),
                format!("max_wait ({max_wait:?}) cannot be shorter than wait ({wait:?})"),
            ));
        }
        Ok((wait, max_wait))
    }

    /// The identity headers always forwarded, plus `forward_headers`.
    fn credential_headers(
        &self,
        raw: &RawAsync,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Vec<HeaderName>, ConfigError> {
        let mut credential_headers = CREDENTIALS.to_vec();
        for (i, name) in raw.forward_headers.iter().flatten().enumerate() {
            credential_headers.push(self.value(
                name,
                || at(&format!("forward_headers[{i}]")),
                header_name,
            )?);
        }
        Ok(credential_headers)
    }

    fn allow_origins(
        &self,
        raw: &RawAsync,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Vec<Origin>, ConfigError> {
        let mut allow_origins = Vec::new();
        for (i, origin) in raw.allow_origins.iter().flatten().enumerate() {
            allow_origins.push(self.value(
                origin,
                || at(&format!("allow_origins[{i}]")),
                parse_origin,
            )?);
        }
        Ok(allow_origins)
    }

    fn on_timeout(
        &self,
        raw: &RawAsync,
        at: &dyn Fn(&str) -> String,
    ) -> Result<OnTimeout, ConfigError> {
        let Some(v) = &raw.on_timeout else {
            return Ok(OnTimeout::GatewayTimeout);
        };
        self.value(
            v,
            || at("on_timeout"),
            |v| match v {
                "504" => Ok(OnTimeout::GatewayTimeout),
                "accepted" => Ok(OnTimeout::Accepted),
                "redirect" => Ok(OnTimeout::Redirect),
                other => Err(format!(
                    "{other:?} is not one of \"504\", \"accepted\", \"redirect\""
                )),
            },
        )
    }
}
