//! An async route's `callback` table: completion reported by the job API
//! calling Baton back, and how that call is carried and checked.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use toml::Spanned;

use super::defaults;
use super::values::{header_name, parse_pointer};
use crate::config::context::Cx;
use crate::config::raw::RawCallback;
use crate::config::ConfigError;

/// Completion by callback: Baton hands the job API a URL to call.
#[derive(Debug, Clone)]
pub struct Callback {
    /// Also poll, slowly, in case the callback never comes.
    pub poll_too: bool,
    pub carrier: CallbackCarrier,
    /// The callback body must be signed (HMAC-SHA256) with this secret.
    pub secret: Option<Arc<[u8]>>,
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

impl Cx<'_> {
    pub(super) fn callback(
        &self,
        raw: &Spanned<RawCallback>,
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
        let carrier = self.carrier(c, at)?;
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
                Some(s) => Some(self.value(s, || at("callback.secret"), signing_secret)?),
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

    /// Where the submit tells the job API the callback URL.
    fn carrier(
        &self,
        c: &RawCallback,
        at: &dyn Fn(&str) -> String,
    ) -> Result<CallbackCarrier, ConfigError> {
        Ok(match (&c.header, &c.pointer) {
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
        })
    }
}

fn signing_secret(s: &str) -> Result<Arc<[u8]>, String> {
    if s.len() < 16 {
        Err("use a secret of at least 16 bytes".to_owned())
    } else {
        Ok(Arc::from(s.as_bytes()))
    }
}
