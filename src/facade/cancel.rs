//! Cancelling a job the request stops following: [`CancelGuard`] holds
//! the route's cancel call, ready to go, and sends it from its drop when
//! the client hangs up (or when the deadline fires it), on a task of its
//! own, since the request's future is gone by then.

use std::time::Duration;

use http::{Method, Request};

use crate::body::Body;
use crate::error::{Error, JobError};
use crate::proxy::upstream::Upstream;

use super::call::JobCalls;
use super::Target;

/// Cancels the job if the request ends without disarming it: when the
/// client hangs up, hyper drops the request's future, and with it this
/// guard, whose drop sends the cancel on a task of its own.
pub(super) struct CancelGuard {
    armed: bool,
    /// Boxed: most routes never cancel, and a held request should not
    /// carry room for a request it will not send.
    cancel: Option<Box<Cancel>>,
}

/// The cancel call, ready to go.
struct Cancel {
    upstream: Upstream,
    request: Request<Body>,
    timeout: Duration,
    /// The request's span (request id, route, job id), for the cancel's
    /// log line: it runs after the request is gone.
    span: tracing::Span,
}

impl CancelGuard {
    pub(super) fn new(calls: &JobCalls<'_>, job: &Target) -> Result<Self, Error> {
        let cancel = &calls.facade.cancel;
        let cancel_call = if cancel.on_disconnect || cancel.on_timeout {
            let vars = crate::config::template::Vars {
                status_url: Some(job.status_url.as_str()),
                job_id: calls.job.id.as_deref(),
            };
            let target = cancel
                .url
                .render(None, vars)
                .map_err(|e| calls.fail(JobError::BadAnswer(format!("the cancel URL: {e}"))))?;
            let url = calls.resolve(&job.status_url, &target)?;
            Some(Box::new(Cancel {
                upstream: calls.upstream.clone(),
                request: calls.request(cancel.method.clone(), &url)?,
                timeout: calls.facade.poll.timeout,
                span: tracing::Span::current(),
            }))
        } else {
            None
        };
        Ok(CancelGuard {
            armed: cancel.on_disconnect,
            cancel: cancel_call,
        })
    }

    pub(super) fn disarm(mut self) {
        self.armed = false;
    }

    pub(super) fn fire(mut self) {
        self.armed = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(cancel) = self.cancel.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Cancel {
            upstream,
            request,
            timeout,
            span,
        } = *cancel;
        let target = request.uri().clone();
        let method: Method = request.method().clone();
        let cancel = async move {
            match upstream.send_within(request, timeout).await {
                Ok(response) => {
                    tracing::info!(%method, %target, status = response.status().as_u16(), "job canceled")
                }
                Err(e) => {
                    tracing::warn!(%method, %target, error = %crate::error::chain(&e), "cancel failed")
                }
            }
        };
        runtime.spawn(tracing::Instrument::instrument(cancel, span));
    }
}
