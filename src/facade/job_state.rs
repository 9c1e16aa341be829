//! Reading a status answer: whatever the dialect, one [`JobState`].
//!
//! The route's [`StateRules`] say which status codes mean running or done,
//! and whether the body carries a state field or a done flag. Transient
//! failures (5xx, 429) never reach here: the follow loop retries them.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::config::{NotFound, StateReader, StateRules};
use crate::error::JobError;

use super::schedule;

/// What one status answer says about the job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Running {
        retry_after: Option<Duration>,
    },
    Succeeded {
        result: Done,
    },
    /// The backend's own account of the failure, if the body has one.
    Failed {
        problem: Option<Value>,
    },
    Canceled,
    Gone(StatusCode),
}

/// How a finished job hands over its result.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    /// A redirect to the result; the value is its `Location`.
    Redirect(String),
    /// The state was in the status body; the route says where the result is.
    InBody,
}

/// A status answer with its body read (within the route's limit).
pub struct StatusAnswer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The body as JSON, parsed once when the rules needed it.
    pub(crate) json: Option<Value>,
}

impl StatusAnswer {
    pub fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        StatusAnswer {
            status,
            headers,
            body,
            json: None,
        }
    }

    /// The value at `pointer`. Reading a state needs only the path to it,
    /// so the rest of a large status body is skimmed, not built.
    pub fn lookup(&self, pointer: &str) -> Result<Option<Value>, JobError> {
        if let Some(json) = &self.json {
            return Ok(json.pointer(pointer).cloned());
        }
        raw_pointer(&self.body, pointer).map_err(|e| {
            JobError::BadAnswer(format!("the {} status body is not JSON ({e})", self.status))
        })
    }

    /// The body as JSON; parses on first use.
    pub(crate) fn json(&mut self) -> Result<&Value, JobError> {
        if self.json.is_none() {
            let value = serde_json::from_slice(&self.body).map_err(|e| {
                JobError::BadAnswer(format!("the {} status body is not JSON ({e})", self.status))
            })?;
            self.json = Some(value);
        }
        Ok(self.json.get_or_insert(Value::Null))
    }
}

/// Reads one status answer. `failure_pointers` pick the backend's error
/// out of a failed job's body.
pub fn read(
    rules: &StateRules,
    failure_pointers: &[String],
    answer: &mut StatusAnswer,
) -> Result<JobState, JobError> {
    let status = answer.status;
    let retry_after = schedule::retry_after(&answer.headers, SystemTime::now());
    if rules.redirect_statuses.contains(&status) {
        let location = answer
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                JobError::BadAnswer(format!("a {status} status answer without a Location"))
            })?;
        return Ok(JobState::Succeeded {
            result: Done::Redirect(location.to_owned()),
        });
    }
    if status == StatusCode::NOT_FOUND {
        return Ok(match rules.not_found {
            NotFound::Gone => JobState::Gone(status),
            NotFound::Running => JobState::Running { retry_after },
        });
    }
    if status == StatusCode::GONE {
        return Ok(JobState::Gone(status));
    }
    if rules.running_statuses.contains(&status) {
        return Ok(JobState::Running { retry_after });
    }
    if !status.is_success() {
        return Err(JobError::BadAnswer(format!(
            "the status monitor answered {status}"
        )));
    }
    read_body(&rules.reader, failure_pointers, answer, retry_after)
}

/// Reads a success's body as the route's reader says: the status alone
/// means done, or a state field or a done flag tells.
fn read_body(
    reader: &StateReader,
    failure_pointers: &[String],
    answer: &mut StatusAnswer,
    retry_after: Option<Duration>,
) -> Result<JobState, JobError> {
    match reader {
        StateReader::Status => Ok(JobState::Succeeded {
            result: Done::InBody,
        }),
        StateReader::Field {
            pointer,
            running,
            succeeded,
            failed,
            canceled,
        } => {
            let found = answer.lookup(pointer)?;
            let Some(value) = found.as_ref().and_then(Value::as_str) else {
                return Err(JobError::BadAnswer(format!(
                    "the status body has no state string at {pointer}"
                )));
            };
            let state = value.to_ascii_lowercase();
            if succeeded.contains(&state) {
                Ok(JobState::Succeeded {
                    result: Done::InBody,
                })
            } else if failed.contains(&state) {
                Ok(JobState::Failed {
                    problem: first_present(answer.json()?, failure_pointers),
                })
            } else if canceled.contains(&state) {
                Ok(JobState::Canceled)
            } else {
                // A state the route does not list counts as running: job
                // APIs add intermediate states, and the deadline bounds the
                // wait either way. It is logged, as it may be a typo.
                if !running.contains(&state) {
                    tracing::debug!(state = %value, %pointer, "unlisted job state; treating it as running");
                }
                Ok(JobState::Running { retry_after })
            }
        }
        StateReader::Done {
            pointer,
            error_pointer,
        } => read_done_flag(
            answer,
            pointer,
            error_pointer.as_deref(),
            failure_pointers,
            retry_after,
        ),
    }
}

/// A done flag: false or absent is running; true is done, failed if the
/// error pointer has a value.
fn read_done_flag(
    answer: &mut StatusAnswer,
    pointer: &str,
    error_pointer: Option<&str>,
    failure_pointers: &[String],
    retry_after: Option<Duration>,
) -> Result<JobState, JobError> {
    match answer.lookup(pointer)? {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {
            Ok(JobState::Running { retry_after })
        }
        Some(Value::Bool(true)) => {
            let error = match error_pointer {
                Some(p) => answer.lookup(p)?.filter(|e| !e.is_null()),
                None => None,
            };
            Ok(match error {
                Some(_) => JobState::Failed {
                    problem: first_present(answer.json()?, failure_pointers),
                },
                None => JobState::Succeeded {
                    result: Done::InBody,
                },
            })
        }
        Some(other) => Err(JobError::BadAnswer(format!(
            "the done flag at {pointer} is not a boolean: {other}"
        ))),
    }
}

/// The value at an RFC 6901 `pointer` in the JSON document `body`, built
/// only along the pointer's path: other members are checked for syntax and
/// skipped, never turned into values.
fn raw_pointer(body: &[u8], pointer: &str) -> Result<Option<Value>, serde_json::Error> {
    use serde_json::value::RawValue;
    let mut current: &RawValue = serde_json::from_slice(body)?;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let text = current.get();
        let next = match text.as_bytes().first() {
            Some(b'{') => {
                let members: std::collections::HashMap<String, &RawValue> =
                    serde_json::from_str(text)?;
                members.get(&token).copied()
            }
            Some(b'[') => {
                let items: Vec<&RawValue> = serde_json::from_str(text)?;
                token
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i).copied())
            }
            _ => None,
        };
        match next {
            Some(value) => current = value,
            None => return Ok(None),
        }
    }
    serde_json::from_str(current.get()).map(Some)
}

/// The first of `pointers` with a non-null value in `json`.
pub(crate) fn first_present(json: &Value, pointers: &[String]) -> Option<Value> {
    pointers
        .iter()
        .filter_map(|p| json.pointer(p))
        .find(|v| !v.is_null())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn rules(reader: StateReader) -> StateRules {
        StateRules {
            running_statuses: vec![StatusCode::ACCEPTED],
            redirect_statuses: vec![StatusCode::FOUND, StatusCode::SEE_OTHER],
            not_found: NotFound::Gone,
            reader,
        }
    }

    fn field() -> StateReader {
        StateReader::Field {
            pointer: "/status".into(),
            running: vec!["running".into()],
            succeeded: vec!["succeeded".into()],
            failed: vec!["failed".into()],
            canceled: vec!["canceled".into()],
        }
    }

    fn answer(status: u16, body: Value) -> StatusAnswer {
        StatusAnswer::new(
            StatusCode::from_u16(status).unwrap(),
            HeaderMap::new(),
            Bytes::from(body.to_string()),
        )
    }

    #[test]
    fn state_field_case_insensitive() {
        let r = rules(field());
        let p = vec!["/error".to_owned()];
        assert_eq!(
            read(&r, &p, &mut answer(200, json!({"status": "Running"}))).unwrap(),
            JobState::Running { retry_after: None }
        );
        assert_eq!(
            read(&r, &p, &mut answer(200, json!({"status": "SUCCEEDED"}))).unwrap(),
            JobState::Succeeded {
                result: Done::InBody
            }
        );
        assert_eq!(
            read(
                &r,
                &p,
                &mut answer(200, json!({"status": "Failed", "error": {"message": "x"}}))
            )
            .unwrap(),
            JobState::Failed {
                problem: Some(json!({"message": "x"}))
            }
        );
        assert_eq!(
            read(&r, &p, &mut answer(200, json!({"status": "canceled"}))).unwrap(),
            JobState::Canceled
        );
        assert!(read(&r, &p, &mut answer(200, json!({"state": "x"}))).is_err());
        assert!(read(
            &r,
            &p,
            &mut StatusAnswer::new(StatusCode::OK, HeaderMap::new(), Bytes::from("<html>"))
        )
        .is_err());
    }

    #[test]
    fn status_codes_and_redirects() {
        let r = rules(field());
        let mut redirect = answer(303, json!(null));
        redirect
            .headers
            .insert("location", HeaderValue::from_static("/result/1"));
        assert_eq!(
            read(&r, &[], &mut redirect).unwrap(),
            JobState::Succeeded {
                result: Done::Redirect("/result/1".into())
            }
        );
        assert!(
            read(&r, &[], &mut answer(303, json!(null))).is_err(),
            "303 needs a Location"
        );
        let mut accepted = answer(202, json!(null));
        accepted
            .headers
            .insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(
            read(&r, &[], &mut accepted).unwrap(),
            JobState::Running {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            read(&r, &[], &mut answer(404, json!(null))).unwrap(),
            JobState::Gone(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            read(&r, &[], &mut answer(410, json!(null))).unwrap(),
            JobState::Gone(StatusCode::GONE)
        );
        let mut unknown_yet = rules(field());
        unknown_yet.not_found = NotFound::Running;
        assert_eq!(
            read(&unknown_yet, &[], &mut answer(404, json!(null))).unwrap(),
            JobState::Running { retry_after: None }
        );
        assert!(read(&r, &[], &mut answer(403, json!(null))).is_err());
    }

    #[test]
    fn raw_pointer_walks_only_the_path() {
        let body = br#"{"a":{"b":[1,{"c":"x"}],"d~e/f":2},"z":null}"#;
        assert_eq!(raw_pointer(body, "/a/b/1/c").unwrap(), Some(json!("x")));
        assert_eq!(raw_pointer(body, "/a/d~0e~1f").unwrap(), Some(json!(2)));
        assert_eq!(raw_pointer(body, "/z").unwrap(), Some(Value::Null));
        assert_eq!(raw_pointer(body, "/a/b/7").unwrap(), None);
        assert_eq!(raw_pointer(body, "/missing/x").unwrap(), None);
        assert_eq!(
            raw_pointer(body, "").unwrap(),
            serde_json::from_slice(body).ok()
        );
        assert!(raw_pointer(b"{not json", "/a").is_err());
    }

    #[test]
    fn done_flag_with_error() {
        let r = rules(StateReader::Done {
            pointer: "/done".into(),
            error_pointer: Some("/error".into()),
        });
        let p = vec!["/error/message".to_owned()];
        assert_eq!(
            read(&r, &p, &mut answer(200, json!({"name": "operations/1"}))).unwrap(),
            JobState::Running { retry_after: None }
        );
        assert_eq!(
            read(
                &r,
                &p,
                &mut answer(200, json!({"done": true, "response": {}}))
            )
            .unwrap(),
            JobState::Succeeded {
                result: Done::InBody
            }
        );
        assert_eq!(
            read(
                &r,
                &p,
                &mut answer(
                    200,
                    json!({"done": true, "error": {"code": 3, "message": "bad"}})
                )
            )
            .unwrap(),
            JobState::Failed {
                problem: Some(json!("bad"))
            }
        );
        assert!(read(&r, &p, &mut answer(200, json!({"done": "yes"}))).is_err());
    }
}
