//! CORS, so that pages on other origins can sync from a browser (`--allow-origin`).
//!
//! One small middleware around the whole router (routes, fallbacks and every error answer
//! alike), rather than `tower-http`'s `CorsLayer`: that layer answers a refused preflight
//! with an empty 200, and this server answers every refusal with its JSON error body.
//!
//! - No origin configured: the layer is not installed, and nothing changes.
//! - Preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed
//!   origin: 204 with the methods, headers and max-age; from any other origin: 403
//!   `origin_not_allowed`. A preflight never carries the token, so it is answered before
//!   authentication and touches no route.
//! - Any other request goes through unchanged; its answer (errors included) gets
//!   `Access-Control-Allow-Origin` when the origin is allowed, none otherwise. A disallowed
//!   origin is not refused: CORS only tells a browser what a page may read; the token is what
//!   authorises a request, and non-browser clients send no `Origin` at all.
//!
//! Origins match exactly, as browsers send them (`scheme://host[:port]`, lowercase, no
//! default port, no path), so each configured origin is validated at start-up: a typo would
//! otherwise fail silently in the browser. `*` allows every origin; that works with the
//! bearer token because the `Authorization` header is listed explicitly and no cookie is
//! used (`Access-Control-Allow-Credentials` is never sent: there are no credentials a
//! browser would attach on its own).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tacit_rm::sync::protocol;

use crate::error::{ApiError, ErrorCode};

/// How long a browser may reuse a preflight answer, seconds. Short enough that a changed
/// `--allow-origin` reaches cached browsers within minutes; Chromium caps it at 7200 anyway.
pub const MAX_AGE_SECONDS: u32 = 600;

/// The methods of the API's routes (`HEAD` is answered by every `GET` route).
const METHODS: &str = "GET, HEAD, PUT, POST";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Any,
    /// Exact origins, as browsers send them.
    List(Vec<String>),
}

/// The CORS policy of a running server.
#[derive(Debug, Clone)]
pub struct Cors {
    allowed: Allowed,
    allow_headers: HeaderValue,
    expose_headers: HeaderValue,
}

impl Cors {
    /// Parses the configured origins (flag values or the environment's comma-separated list,
    /// blanks ignored): `None` when there are none, so that the server sends no CORS headers.
    pub fn from_config(origins: &[String]) -> Result<Option<Cors>, String> {
        let mut list: Vec<String> = Vec::new();
        for origin in origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            let origin = if origin == "*" {
                origin.to_string()
            } else {
                parse_origin(origin)?
            };
            if !list.contains(&origin) {
                list.push(origin);
            }
        }
        if list.is_empty() {
            return Ok(None);
        }
        let allowed = if list.iter().any(|o| o == "*") {
            if list.len() > 1 {
                return Err(
                    "--allow-origin '*' allows every origin: give it alone, not with a list".into(),
                );
            }
            Allowed::Any
        } else {
            Allowed::List(list)
        };
        // The headers the clients send (src/sync/client.rs) and read (the ETag of a pull,
        // Retry-After of a 429/507, the replay flag of a push): named from the protocol's
        // constants so that a renamed header follows.
        let allow_headers = [
            header::AUTHORIZATION.as_str(),
            header::CONTENT_TYPE.as_str(),
            header::IF_NONE_MATCH.as_str(),
            protocol::IDEMPOTENCY_KEY,
        ];
        let expose_headers = [
            header::ETAG.as_str(),
            header::RETRY_AFTER.as_str(),
            protocol::REPLAYED,
        ];
        let list = |names: &[&str]| {
            HeaderValue::from_str(&names.join(", ").to_ascii_lowercase())
                .map_err(|e| format!("a CORS header list is not a header value: {e}"))
        };
        Ok(Some(Cors {
            allowed,
            allow_headers: list(&allow_headers)?,
            expose_headers: list(&expose_headers)?,
        }))
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.allowed {
            Allowed::Any => Some(HeaderValue::from_static("*")),
            // Echoed as received: it equals a configured origin byte for byte.
            Allowed::List(list) => {
                let text = origin.to_str().ok()?;
                list.iter().any(|o| o == text).then(|| origin.clone())
            }
        }
    }

    /// A header the page asks for beyond the list is simply not granted: the browser then
    /// refuses the request itself, which says more to its developer than a 403 here would.
    fn preflight(&self) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let out = response.headers_mut();
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.clone(),
        );
        out.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(MAX_AGE_SECONDS),
        );
        response
    }
}

/// Installs the policy around every route and fallback of `router`; none: `router` as is.
pub fn apply(router: Router, cors: Option<Cors>) -> Router {
    match cors {
        None => router,
        Some(cors) => router.layer(axum::middleware::from_fn_with_state(Arc::new(cors), handle)),
    }
}

async fn handle(State(cors): State<Arc<Cors>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin.as_ref().and_then(|o| cors.allow_origin(o));
    let preflight = request.method() == Method::OPTIONS
        && origin.is_some()
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = match (preflight, &allowed) {
        (true, Some(_)) => cors.preflight(),
        (true, None) => {
            let shown: String = origin
                .as_ref()
                .and_then(|o| o.to_str().ok())
                .unwrap_or("?")
                .chars()
                .take(256)
                .collect();
            ApiError::new(
                ErrorCode::OriginNotAllowed,
                format!("origin '{shown}' is not allowed (tacit-server serve --allow-origin)"),
            )
            .into_response()
        }
        (false, _) => next.run(request).await,
    };
    let out = response.headers_mut();
    // The answer depends on the request's Origin: shared caches must key on it.
    out.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(value) = allowed {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if !preflight {
            out.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                cors.expose_headers.clone(),
            );
        }
    }
    response
}

/// Validates one origin as browsers serialise it; the error names the origin and the fix.
pub fn parse_origin(origin: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "allowed origin '{origin}' (--allow-origin, TACIT_ALLOW_ORIGINS): {why} \
             (an origin is scheme://host[:port], \
             e.g. https://app.example or http://localhost:5173, or '*' alone)"
        ))
    };
    let Some((scheme, rest)) = origin.split_once("://") else {
        return bad("no scheme");
    };
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return bad("the scheme must be http or https, in lowercase"),
    };
    if rest.contains(['/', '?', '#']) {
        return bad("an origin has no path, query or fragment, not even a trailing '/'");
    }
    if rest.contains('@') {
        return bad("an origin has no user name or password");
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        // An IPv6 literal: [hex:hex…]
        let Some((address, tail)) = inner.split_once(']') else {
            return bad("an IPv6 host needs its closing ']'");
        };
        if address.is_empty()
            || !address
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b':' | b'.'))
        {
            return bad("not an IPv6 address in lowercase hex");
        }
        match tail {
            "" => (address, None),
            _ => match tail.strip_prefix(':') {
                Some(port) => (address, Some(port)),
                None => return bad("unexpected text after the IPv6 host"),
            },
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return bad("no host");
    }
    if !rest.starts_with('[') {
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return bad("browsers send the host in lowercase");
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        {
            return bad(
                "the host may hold a-z, 0-9, '.' and '-' (an international name in its xn-- form)",
            );
        }
    }
    if let Some(port) = port {
        let Some(number) = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0 && port.bytes().all(|b| b.is_ascii_digit()))
        else {
            return bad("the port must be a number in 1-65535");
        };
        if number == default_port {
            return bad("browsers leave out the scheme's default port: drop it");
        }
    }
    Ok(origin.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_origins_are_kept_as_given() {
        for origin in [
            "https://app.example",
            "http://localhost:5173",
            "http://127.0.0.1:8080",
            "https://xn--bcher-kva.example",
            "http://[::1]:3000",
            "https://[2001:db8::1]",
        ] {
            assert_eq!(parse_origin(origin).as_deref(), Ok(origin));
        }
    }

    #[test]
    fn malformed_origins_are_refused_with_the_reason() {
        for (origin, reason) in [
            ("app.example", "no scheme"),
            ("ftp://app.example", "http or https"),
            ("HTTPS://app.example", "http or https"),
            ("https://app.example/", "trailing '/'"),
            ("https://app.example/path", "no path"),
            ("https://App.example", "lowercase"),
            ("https://", "no host"),
            ("https://:8080", "no host"),
            ("https://app.example:0", "1-65535"),
            ("https://app.example:99999", "1-65535"),
            ("https://app.example:+80", "1-65535"),
            ("https://app.example:443", "default port"),
            ("http://app.example:80", "default port"),
            ("https://user@app.example", "user name"),
            ("https://bücher.example", "xn--"),
            ("http://[::1", "closing ']'"),
        ] {
            let e = parse_origin(origin).expect_err(origin);
            assert!(e.contains(reason), "{origin}: {e}");
            assert!(e.contains(origin), "{origin}: {e}");
        }
    }

    #[test]
    fn the_configuration_merges_blanks_duplicates_and_the_wildcard() {
        let cfg = |list: &[&str]| {
            Cors::from_config(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert!(cfg(&[]).unwrap().is_none());
        assert!(cfg(&["", " "]).unwrap().is_none());
        let cors = cfg(&[
            " https://a.example",
            "https://a.example",
            "http://b.example:81",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            cors.allowed,
            Allowed::List(vec![
                "https://a.example".into(),
                "http://b.example:81".into()
            ])
        );
        assert_eq!(cfg(&["*"]).unwrap().unwrap().allowed, Allowed::Any);
        assert!(cfg(&["*", "https://a.example"])
            .unwrap_err()
            .contains("alone"));
        assert!(cfg(&["https://a.example", "nope"]).is_err());
    }

    #[test]
    fn only_exact_origins_are_allowed() {
        let cors = Cors::from_config(&["https://a.example".to_string()])
            .unwrap()
            .unwrap();
        let allow = |o: &'static str| cors.allow_origin(&HeaderValue::from_static(o));
        assert_eq!(allow("https://a.example").unwrap(), "https://a.example");
        for other in [
            "http://a.example",
            "https://a.example:8443",
            "https://b.a.example",
            "https://a.example.evil",
            "null",
        ] {
            assert!(allow(other).is_none(), "{other}");
        }
        let any = Cors::from_config(&["*".to_string()]).unwrap().unwrap();
        assert_eq!(
            any.allow_origin(&HeaderValue::from_static("null")).unwrap(),
            "*"
        );
    }
}
