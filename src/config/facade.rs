//! The validated `[routes.async]` table: how one route drives its job API.
//!
//! Every part of the job conversation is data here — which answers are
//! jobs, where the handle is, how a status reads, where the result is — so
//! a job API that matches no preset is still expressible in TOML alone.

use std::ops::Range;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, StatusCode, Uri};
use toml::Spanned;

use super::presets;
use super::raw::RawAsync;
use super::{ConfigError, Cx};
use crate::config::template::Template;

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

/// Completion by callback: Baton hands the job API a URL to call.
#[derive(Debug, Clone)]
pub struct Callback {
    /// Also poll, slowly, in case the callback never comes.
    pub poll_too: bool,
    pub carrier: CallbackCarrier,
    /// The callback body must be signed (HMAC-SHA256) with this secret.
    pub secret: Option<std::sync::Arc<[u8]>>,
    pub signature_header: HeaderName,
    /// Where the callback says the job's status code.
    pub status_header: HeaderName,
    /// Answer with this part of a JSON callback body, not all of it.
    pub result_pointer: Option<String>,
    /// The fallback poll's interval in `callback+poll` mode.
    pub poll_interval: Duration,
}

#[derive(Debug, Clone)]
pub enum CallbackCarrier {
    /// A header of the submit.
    Header(HeaderName),
    /// A field of the submit's JSON body.
    Pointer(String),
}

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

#[derive(Debug, Clone)]
pub struct Cancel {
    pub on_disconnect: bool,
    pub on_timeout: bool,
    pub method: Method,
    pub url: Template,
}

/// A scheme, host and port that followed URLs may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn of(scheme: &Scheme, authority: &Authority) -> Origin {
        let port = authority
            .port_u16()
            .unwrap_or(if *scheme == Scheme::HTTPS { 443 } else { 80 });
        Origin {
            scheme: scheme.clone(),
            host: authority.host().to_ascii_lowercase(),
            port,
        }
    }

    pub fn of_uri(uri: &Uri) -> Option<Origin> {
        Some(Origin::of(uri.scheme()?, uri.authority()?))
    }
}

pub mod defaults {
    //! Facade defaults, in one place for `config/example.toml`.
    use std::time::Duration;

    pub const WAIT: Duration = Duration::from_secs(30);
    pub const MAX_STATUS_BODY: u64 = 1024 * 1024;
    pub const MAX_RESULT_BODY: u64 = 64 * 1024 * 1024;
    pub const MAX_HOPS: usize = 5;
    pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
    pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
    pub const MAX_STORED_BODY: u64 = 1024 * 1024;
    pub const CALLBACK_HEADER: &str = "x-callback-url";
    pub const SIGNATURE_HEADER: &str = "x-baton-signature";
    pub const STATUS_HEADER: &str = "x-callback-status";
    pub const CALLBACK_POLL: Duration = Duration::from_secs(30);
    pub const JOB_STATUSES: [u16; 1] = [202];
    pub const RUNNING_STATUSES: [u16; 1] = [202];
    pub const REDIRECT_STATUSES: [u16; 2] = [302, 303];
    pub const RUNNING: [&str; 9] = [
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
    pub const SUCCEEDED: [&str; 5] = ["succeeded", "success", "completed", "complete", "done"];
    pub const FAILED: [&str; 3] = ["failed", "failure", "error"];
    pub const CANCELED: [&str; 4] = ["canceled", "cancelled", "revoked", "terminated"];
    pub const FAILURE_STATUS: u16 = 502;
    pub const FAILURE_POINTERS: [&str; 2] = ["/error", "/message"];
    pub const POLL_INITIAL: Duration = Duration::from_millis(100);
    pub const POLL_FACTOR: f64 = 1.5;
    pub const POLL_JITTER: f64 = 0.2;
    pub const POLL_MIN: Duration = Duration::from_millis(50);
    pub const POLL_MAX: Duration = Duration::from_secs(5);
    pub const POLL_TIMEOUT: Duration = Duration::from_secs(10);
    pub const POLL_MAX_FAILURES: u32 = 5;
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
        let route = raw.get_ref().clone();
        let (preset, raw) = match &route.preset {
            None => (None, route),
            Some(name) => {
                let Some((static_name, _)) =
                    presets::PRESETS.iter().find(|(n, _)| n == name.get_ref())
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
                (Some(*static_name), presets::merge(route, preset))
            }
        };

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

        let mut credential_headers = CREDENTIALS.to_vec();
        for (i, name) in raw.forward_headers.iter().flatten().enumerate() {
            credential_headers.push(self.value(
                name,
                || at(&format!("forward_headers[{i}]")),
                header_name,
            )?);
        }
        let mut allow_origins = Vec::new();
        for (i, origin) in raw.allow_origins.iter().flatten().enumerate() {
            allow_origins.push(self.value(
                origin,
                || at(&format!("allow_origins[{i}]")),
                parse_origin,
            )?);
        }

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
            on_timeout: match &raw.on_timeout {
                None => OnTimeout::GatewayTimeout,
                Some(v) => self.value(
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
                )?,
            },
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
            job: JobDetect {
                statuses: self.statuses(
                    raw.job.statuses.as_ref(),
                    || at("job.statuses"),
                    &defaults::JOB_STATUSES,
                )?,
                needs_handle: raw.job.needs_handle.unwrap_or(false),
            },
            handle: self.handle(&raw, &table, &at)?,
            state: self.state(&raw, &at)?,
            result: self.result(&raw, &table, &at)?,
            failure: Failure {
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
            },
            poll: self.poll(&raw, &table, &at)?,
            cancel: Cancel {
                on_disconnect: raw.cancel.on_disconnect.unwrap_or(false),
                on_timeout: raw.cancel.on_timeout.unwrap_or(false),
                method: match &raw.cancel.method {
                    None => Method::DELETE,
                    Some(m) => self.value(m, || at("cancel.method"), super::parse_method)?,
                },
                url: match &raw.cancel.url {
                    None => Template::status_url(),
                    Some(u) => self.value(
                        u,
                        || at("cancel.url"),
                        |t| Template::parse(t, &["status_url", "job_id"]),
                    )?,
                },
            },
        };
        // Without a monitor there is nothing to cancel: the stand-in status
        // URL is the submit's own, which a DELETE must never reach.
        if matches!(route.handle.source, HandleSource::Callback)
            && (route.cancel.on_disconnect || route.cancel.on_timeout)
        {
            return Err(self.error(
                table,
                at("cancel"),
                "a job that answers by callback alone has no monitor to cancel: configure a handle, or drop cancel".into(),
            ));
        }
        Ok(route)
    }

    fn callback(
        &self,
        raw: &Spanned<super::raw::RawCallback>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Callback, ConfigError> {
        let c = raw.get_ref();
        let poll_too = match &c.mode {
            None => false,
            Some(m) => self.value(
                m,
                || at("callback.mode"),
                |m| match m {
                    "callback" => Ok(false),
                    "callback+poll" => Ok(true),
                    other => Err(format!(
                        "{other:?} is not one of \"callback\", \"callback+poll\""
                    )),
                },
            )?,
        };
        let carrier = match (&c.header, &c.pointer) {
            (Some(_), Some(p)) => {
                return Err(self.error(
                    p.span(),
                    at("callback.pointer"),
                    "set either callback.header or callback.pointer, not both".into(),
                ))
            }
            (None, Some(p)) => {
                CallbackCarrier::Pointer(self.value(p, || at("callback.pointer"), parse_pointer)?)
            }
            (Some(h), None) => {
                CallbackCarrier::Header(self.value(h, || at("callback.header"), header_name)?)
            }
            (None, None) => {
                CallbackCarrier::Header(HeaderName::from_static(defaults::CALLBACK_HEADER))
            }
        };
        let named = |value: &Option<Spanned<String>>, key: &str, default: &'static str| match value
        {
            None => Ok(HeaderName::from_static(default)),
            Some(h) => self.value(h, || at(key), header_name),
        };
        Ok(Callback {
            poll_too,
            carrier,
            secret: match &c.secret {
                None => None,
                Some(s) => Some(self.value(
                    s,
                    || at("callback.secret"),
                    |s| {
                        if s.len() < 16 {
                            Err("use a secret of at least 16 bytes".to_owned())
                        } else {
                            Ok(std::sync::Arc::from(s.as_bytes()))
                        }
                    },
                )?),
            },
            signature_header: named(
                &c.signature_header,
                "callback.signature_header",
                defaults::SIGNATURE_HEADER,
            )?,
            status_header: named(
                &c.status_header,
                "callback.status_header",
                defaults::STATUS_HEADER,
            )?,
            result_pointer: match &c.result_pointer {
                None => None,
                Some(p) => Some(self.value(p, || at("callback.result_pointer"), parse_pointer)?),
            },
            poll_interval: self.duration(
                c.poll_interval.as_ref(),
                || at("callback.poll_interval"),
                defaults::CALLBACK_POLL,
            )?,
        })
    }

    fn idempotency(
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

    fn handle(
        &self,
        raw: &RawAsync,
        table: &Range<usize>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<Handle, ConfigError> {
        let h = &raw.handle;
        let set = [
            h.header.is_some(),
            h.pointer.is_some(),
            h.template.is_some(),
        ];
        let source = match set {
            [true, false, false] => {
                let mut names = Vec::new();
                if let Some(spanned) = &h.header {
                    for name in spanned.get_ref().clone().into_vec() {
                        let name = header_name(&name)
                            .map_err(|e| self.error(spanned.span(), at("handle.header"), e))?;
                        names.push(name);
                    }
                }
                if names.is_empty() {
                    return Err(self.error(table.clone(), at("handle.header"), "names no header".into()));
                }
                HandleSource::Headers(names)
            }
            [false, true, false] => match &h.pointer {
                Some(p) => HandleSource::Pointer(self.value(p, || at("handle.pointer"), parse_pointer)?),
                None => unreachable!("matched on presence"),
            },
            [false, false, true] => match &h.template {
                Some(t) => HandleSource::Template(self.value(t, || at("handle.template"), |t| Template::parse(t, &[]))?),
                None => unreachable!("matched on presence"),
            },
            [false, false, false] if matches!(&raw.callback, Some(c) if c.get_ref().mode.as_ref().is_none_or(|m| m.get_ref() == "callback")) => {
                HandleSource::Callback
            }
            [false, false, false] => {
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
        };
        let id_pointer = match &h.id_pointer {
            None => None,
            Some(p) => Some(self.value(p, || at("handle.id_pointer"), parse_pointer)?),
        };
        Ok(Handle { source, id_pointer })
    }

    fn state(
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
        let set = |values: &Option<Vec<Spanned<String>>>, fallback: &[&str]| -> Vec<String> {
            match values {
                Some(v) => v.iter().map(|s| s.get_ref().to_ascii_lowercase()).collect(),
                None => fallback.iter().map(|s| (*s).to_owned()).collect(),
            }
        };
        let reader = match (&s.pointer, &s.done_pointer) {
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
        };
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

    fn result(
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

    fn poll(
        &self,
        raw: &RawAsync,
        table: &Range<usize>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<PollSchedule, ConfigError> {
        let p = &raw.poll;
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

    fn headers(
        &self,
        raw: Option<&std::collections::BTreeMap<String, Spanned<String>>>,
        at: impl Fn(&str) -> String,
    ) -> Result<HeaderMap, ConfigError> {
        let mut map = HeaderMap::new();
        for (name, value) in raw.into_iter().flatten() {
            let header = self.value(value, || at(name), |_| header_name(name))?;
            let value = self.value(
                value,
                || at(name),
                |v| {
                    HeaderValue::from_str(v)
                        .map_err(|_| format!("{v:?} is not a valid header value"))
                },
            )?;
            map.append(header, value);
        }
        Ok(map)
    }

    fn statuses(
        &self,
        raw: Option<&Spanned<Vec<Spanned<i64>>>>,
        key: impl Fn() -> String,
        fallback: &[u16],
    ) -> Result<Vec<StatusCode>, ConfigError> {
        let Some(list) = raw else {
            return Ok(fallback
                .iter()
                .filter_map(|s| StatusCode::from_u16(*s).ok())
                .collect());
        };
        list.get_ref()
            .iter()
            .map(|s| self.status(s, &key, 100..=599))
            .collect()
    }

    fn status(
        &self,
        raw: &Spanned<i64>,
        key: impl Fn() -> String,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<StatusCode, ConfigError> {
        let n = *raw.get_ref();
        if !range.contains(&n) {
            return Err(self.error(
                raw.span(),
                key(),
                format!(
                    "{n} is not an HTTP status between {} and {}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        StatusCode::from_u16(n as u16).map_err(|e| self.error(raw.span(), key(), e.to_string()))
    }

    fn pointers(
        &self,
        raw: Option<&Vec<Spanned<String>>>,
        key: impl Fn(usize) -> String,
        fallback: &[&str],
    ) -> Result<Vec<String>, ConfigError> {
        match raw {
            None => Ok(fallback.iter().map(|s| (*s).to_owned()).collect()),
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, p)| self.value(p, || key(i), parse_pointer))
                .collect(),
        }
    }
}

fn parse_pointer(text: &str) -> Result<String, String> {
    if text.is_empty() || text.starts_with('/') {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a JSON pointer (RFC 6901): it must start with `/`, e.g. \"/status\""
        ))
    }
}

fn header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| format!("{text:?} is not a valid header name"))
}

fn parse_origin(text: &str) -> Result<Origin, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not an origin: {e}"))?;
    match (uri.scheme(), uri.authority()) {
        (Some(scheme), Some(authority))
            if (*scheme == Scheme::HTTP || *scheme == Scheme::HTTPS)
                && uri.path_and_query().is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty()) =>
        {
            Ok(Origin::of(scheme, authority))
        }
        _ => Err(format!("{text:?} is not an origin; write scheme://host[:port], e.g. \"https://files.example.com\"")),
    }
}
