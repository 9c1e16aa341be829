//! The route's path rewrite, in both directions, in one place: a client's
//! target becomes the backend's URL on the way in ([`backend_uri`]), and a
//! URL on the backend's origin (a job's status monitor) becomes the path a
//! client would use through Baton on the way out ([`client_path`]). Each
//! is the other's inverse, which the property tests below hold them to.

use http::Uri;
use url::Url;

use crate::config::{BackendConfig, Route};
use crate::error::{ClientError, Error};

/// The backend URL for a client's request target: the backend's base path,
/// then the route's rewrite of the client's path, then the query as sent.
pub(crate) fn backend_uri(
    backend: &BackendConfig,
    route: &Route,
    client: &Uri,
) -> Result<Uri, Error> {
    let mut path = client.path();
    if let Some(prefix) = &route.strip_prefix {
        if let Some(rest) = path.strip_prefix(prefix.as_str()) {
            // Only whole segments: `/api` strips from `/api/x`, not `/apix`.
            if rest.is_empty() || rest.starts_with('/') {
                path = rest;
            }
        }
    }
    let add = route.add_prefix.as_deref().unwrap_or("");
    let mut target = String::with_capacity(
        backend.base_path.len()
            + add.len()
            + path.len()
            + client.query().map_or(0, |q| q.len() + 1),
    );
    target.push_str(&backend.base_path);
    target.push_str(add);
    if path.is_empty() {
        target.push('/');
    } else {
        target.push_str(path);
    }
    if let Some(query) = client.query() {
        target.push('?');
        target.push_str(query);
    }
    Uri::builder()
        .scheme(backend.scheme.clone())
        .authority(backend.authority.clone())
        .path_and_query(target)
        .build()
        .map_err(|e| {
            ClientError::BadRequest(format!("cannot rewrite the request path: {e}")).into()
        })
}

/// The client's path for a URL on the backend's origin: the inverse of
/// [`backend_uri`]. The backend's base path comes off, then the route's
/// added prefix is swapped back for the stripped one, then the query.
pub(crate) fn client_path(backend: &BackendConfig, route: &Route, url: &Url) -> String {
    let mut path = url.path();
    if let Some(rest) = path.strip_prefix(backend.base_path.as_str()) {
        if rest.starts_with('/') {
            path = rest;
        }
    }
    let mut public = String::new();
    match (&route.add_prefix, &route.strip_prefix) {
        (Some(added), strip) if path.starts_with(added.as_str()) => {
            public.push_str(strip.as_deref().unwrap_or(""));
            public.push_str(&path[added.len()..]);
        }
        (None, Some(strip)) => {
            public.push_str(strip);
            public.push_str(path);
        }
        _ => public.push_str(path),
    }
    if public.is_empty() {
        public.push('/');
    }
    if let Some(query) = url.query() {
        public.push('?');
        public.push_str(query);
    }
    public
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::router;
    use crate::config::Config;
    use crate::target;
    use proptest::prelude::*;

    /// A route that serves `/pub/*` from the backend's `/public/...`, and a
    /// catch-all behind it.
    fn config() -> Config {
        Config::parse(
            r#"
[backends.files]
url = "http://files.internal:8000/base"

[[routes]]
name = "pub"
match = { path = "/pub/*" }
backend = "files"
strip_prefix = "/pub"
add_prefix = "/public"

[[routes]]
name = "rest"
match = { path = "/*" }
backend = "files"
"#,
            "test.toml",
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("pub".to_owned()),
            Just("public".to_owned()),
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("%2e%2E".to_owned()),
            Just("%2e".to_owned()),
            Just("%2f".to_owned()),
            Just("%5c".to_owned()),
            Just("%70ub".to_owned()),
            Just("secret".to_owned()),
            Just(String::new()),
            "[a-z%.]{1,4}",
        ]
    }

    proptest! {
        /// Whatever the client writes, a request routed to `/pub/*` reaches
        /// the backend under `/base/public/`, with no dot-segment a backend
        /// could resolve upwards.
        #[test]
        fn no_request_leaves_its_route_prefix(
            segments in proptest::collection::vec(proptest::collection::vec(piece(), 1..3), 0..7),
            query in proptest::option::of("[a-z=&.%/]{0,8}"),
        ) {
            let config = config();
            let mut path = String::new();
            for segment in &segments {
                path.push('/');
                path.push_str(&segment.concat());
            }
            if path.is_empty() {
                path.push('/');
            }
            let Ok(normal) = target::normalize(&path, false) else {
                return Ok(());
            };
            let route = router::find(&config.routes, &http::Method::GET, None, &normal)
                .expect("the catch-all matches every normalised path");
            let target = match &query {
                Some(q) => format!("{normal}?{q}"),
                None => normal.to_string(),
            };
            let Ok(client) = target.parse::<Uri>() else {
                return Ok(());
            };
            let uri = backend_uri(&route.backend, route, &client).expect("a rewritable path");
            let sent = uri.path();
            prop_assert!(sent.starts_with("/base/"), "{path} -> {sent}");
            if &*route.name == "pub" {
                prop_assert!(
                    sent == "/base/public/" || sent.starts_with("/base/public/"),
                    "{path} -> {sent}"
                );
            }
            for segment in sent.split('/') {
                prop_assert!(segment != ".." && segment != ".", "{path} -> {sent}");
                prop_assert!(!segment.eq_ignore_ascii_case("%2e%2e"), "{path} -> {sent}");
            }
            prop_assert_eq!(uri.query(), query.as_deref());
        }

        /// The way back undoes the way in: a routed path, rewritten for
        /// the backend and read back as the client's, is the path the
        /// client sent (a bare prefix comes back with its `/`).
        #[test]
        fn the_inverse_undoes_the_rewrite(
            segments in proptest::collection::vec("[a-z0-9]{1,6}", 0..5),
            query in proptest::option::of("[a-z=&]{1,8}"),
            under_pub in any::<bool>(),
        ) {
            let config = config();
            let mut path = String::from(if under_pub { "/pub" } else { "" });
            for segment in &segments {
                path.push('/');
                path.push_str(segment);
            }
            if path.is_empty() {
                path.push('/');
            }
            let target = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let route = router::find(&config.routes, &http::Method::GET, None, &path)
                .expect("the catch-all matches every path");
            let client: Uri = target.parse().expect("a plain path");
            let uri = backend_uri(&route.backend, route, &client).expect("a rewritable path");
            let url = Url::parse(&uri.to_string()).expect("a URL");
            let back = client_path(&route.backend, route, &url);
            let expected = match (&*route.name, path.as_str()) {
                ("pub", "/pub") => match &query {
                    Some(q) => format!("/pub/?{q}"),
                    None => "/pub/".to_owned(),
                },
                _ => target.clone(),
            };
            prop_assert_eq!(back, expected, "{} -> {}", target, uri);
        }
    }
}
