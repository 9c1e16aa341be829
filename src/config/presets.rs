//! The job-API dialects Baton knows by name, written as the `[routes.async]`
//! TOML a user would otherwise write by hand.
//!
//! A route names a preset and overrides any part of it; [`merge`] lays the
//! route's own keys over the preset's, table by table. Choosing a different
//! *kind* of source in a table (a handle `pointer` where the preset has a
//! `header`) replaces the preset's source rather than conflicting with it.

use super::raw::{
    RawAsync, RawCancel, RawFailure, RawHandle, RawIdempotency, RawJob, RawPoll, RawResult,
    RawState,
};

/// Names and the dialect each one speaks (the README's table of job APIs).
pub(crate) const PRESETS: [(&str, &str); 5] = [
    // A. Location + 303 (Azure Architecture Center async request-reply).
    (
        "location-303",
        r#"
        job = { statuses = [202] }
        handle = { header = "Location" }
        state = { running_statuses = [202], redirect_statuses = [302, 303], pointer = "/status" }
        result = { from = "status-body" }
        "#,
    ),
    // B. Operation-Location / Azure-AsyncOperation (Microsoft REST guidelines).
    (
        "operation-location",
        r#"
        job = { statuses = [201, 202], needs_handle = true }
        handle = { header = ["Operation-Location", "Azure-AsyncOperation"], id_pointer = "/id" }
        state = { pointer = "/status" }
        result = { from = "body-pointer", pointer = "/result" }
        failure = { pointers = ["/error/message", "/error"] }
        "#,
    ),
    // C. Google long-running operations (AIP-151): the submit is a 200
    // whose body names the operation.
    (
        "google-operation",
        r#"
        job = { statuses = [200], needs_handle = true }
        handle = { template = "/v1/{/name}", id_pointer = "/name" }
        state = { done_pointer = "/done", error_pointer = "/error" }
        result = { from = "body-pointer", pointer = "/response" }
        failure = { pointers = ["/error/message", "/error"] }
        "#,
    ),
    // D. Status field + embedded result (task queues, Celery-like).
    (
        "status-field",
        r#"
        job = { statuses = [200, 201, 202], needs_handle = true }
        handle = { template = "/tasks/{/task_id}", id_pointer = "/task_id" }
        state = { pointer = "/state" }
        result = { from = "body-pointer", pointer = "/result" }
        failure = { pointers = ["/traceback", "/error", "/message"] }
        "#,
    ),
    // E. 202 while running, 200 when done (Durable Functions style).
    (
        "accepted-while-running",
        r#"
        job = { statuses = [202] }
        handle = { header = "Location" }
        state = { running_statuses = [202], pointer = "/runtimeStatus" }
        result = { from = "body-pointer", pointer = "/output" }
        failure = { pointers = ["/output", "/error"] }
        "#,
    ),
];

/// The preset's table, if `name` is one.
pub(crate) fn lookup(name: &str) -> Option<RawAsync> {
    let (_, text) = PRESETS.iter().find(|(n, _)| *n == name)?;
    // The preset texts are part of the program and covered by a test, so a
    // failure here is a bug in Baton, not in the user's file.
    Some(toml::from_str(text).expect("built-in presets parse"))
}

pub(crate) fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

/// The route's own keys over the preset's.
pub(crate) fn merge(route: RawAsync, preset: RawAsync) -> RawAsync {
    RawAsync {
        preset: route.preset,
        wait: route.wait.or(preset.wait),
        max_wait: route.max_wait.or(preset.max_wait),
        submit_headers: route.submit_headers.or(preset.submit_headers),
        poll_headers: route.poll_headers.or(preset.poll_headers),
        forward_headers: route.forward_headers.or(preset.forward_headers),
        allow_origins: route.allow_origins.or(preset.allow_origins),
        max_status_body: route.max_status_body.or(preset.max_status_body),
        max_result_body: route.max_result_body.or(preset.max_result_body),
        max_hops: route.max_hops.or(preset.max_hops),
        on_timeout: route.on_timeout.or(preset.on_timeout),
        max_held: route.max_held.or(preset.max_held),
        idempotency: RawIdempotency {
            enabled: route.idempotency.enabled.or(preset.idempotency.enabled),
            header: route.idempotency.header.or(preset.idempotency.header),
            scope_header: route
                .idempotency
                .scope_header
                .or(preset.idempotency.scope_header),
            ttl: route.idempotency.ttl.or(preset.idempotency.ttl),
            max_stored_body: route
                .idempotency
                .max_stored_body
                .or(preset.idempotency.max_stored_body),
        },
        callback: route.callback.or(preset.callback),
        job: RawJob {
            statuses: route.job.statuses.or(preset.job.statuses),
            needs_handle: route.job.needs_handle.or(preset.job.needs_handle),
        },
        handle: merge_handle(route.handle, preset.handle),
        state: merge_state(route.state, preset.state),
        result: merge_result(route.result, preset.result),
        failure: RawFailure {
            status: route.failure.status.or(preset.failure.status),
            pointers: route.failure.pointers.or(preset.failure.pointers),
        },
        poll: RawPoll {
            initial: route.poll.initial.or(preset.poll.initial),
            factor: route.poll.factor.or(preset.poll.factor),
            jitter: route.poll.jitter.or(preset.poll.jitter),
            min_interval: route.poll.min_interval.or(preset.poll.min_interval),
            max_interval: route.poll.max_interval.or(preset.poll.max_interval),
            timeout: route.poll.timeout.or(preset.poll.timeout),
            max_failures: route.poll.max_failures.or(preset.poll.max_failures),
            adaptive: route.poll.adaptive.or(preset.poll.adaptive),
        },
        cancel: RawCancel {
            on_disconnect: route.cancel.on_disconnect.or(preset.cancel.on_disconnect),
            on_timeout: route.cancel.on_timeout.or(preset.cancel.on_timeout),
            method: route.cancel.method.or(preset.cancel.method),
            url: route.cancel.url.or(preset.cancel.url),
        },
    }
}

fn merge_handle(route: RawHandle, preset: RawHandle) -> RawHandle {
    let id_pointer = route.id_pointer.or(preset.id_pointer);
    if route.header.is_some() || route.pointer.is_some() || route.template.is_some() {
        return RawHandle {
            id_pointer,
            ..route
        };
    }
    RawHandle {
        id_pointer,
        ..preset
    }
}

fn merge_state(route: RawState, preset: RawState) -> RawState {
    // A route that picks the other way of reading state drops the preset's.
    let (pointer, done_pointer, error_pointer) =
        if route.pointer.is_some() || route.done_pointer.is_some() {
            (route.pointer, route.done_pointer, route.error_pointer)
        } else {
            (
                preset.pointer,
                preset.done_pointer,
                route.error_pointer.or(preset.error_pointer),
            )
        };
    RawState {
        running_statuses: route.running_statuses.or(preset.running_statuses),
        redirect_statuses: route.redirect_statuses.or(preset.redirect_statuses),
        not_found: route.not_found.or(preset.not_found),
        pointer,
        running: route.running.or(preset.running),
        succeeded: route.succeeded.or(preset.succeeded),
        failed: route.failed.or(preset.failed),
        canceled: route.canceled.or(preset.canceled),
        done_pointer,
        error_pointer,
    }
}

fn merge_result(route: RawResult, preset: RawResult) -> RawResult {
    if route.from.is_some() {
        return route;
    }
    RawResult {
        from: preset.from,
        pointer: route.pointer.or(preset.pointer),
        template: route.template.or(preset.template),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        for name in names() {
            assert!(lookup(name).is_some(), "{name}");
        }
    }
}
