//! The hub's response headers: no inline script and no framing (the page cannot be
//! made to run a stranger's script or be clicked through another site's frame), no
//! MIME sniffing, no referrer leaving the hub, and pages never cached.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Scripts, styles, fetches and forms only from ferry itself; no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub async fn headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/hub/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    if !is_asset {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// Addresses remembered before the least recent are forgotten.
const REMEMBERED: usize = 10_000;

/// Sign-in attempts per client address (`hub.sign_ins_per_minute`).
pub struct SignIns {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl SignIns {
    /// `None` when the setting is 0 (no limit).
    pub fn new(per_minute: u32) -> Option<SignIns> {
        NonZeroU32::new(per_minute).map(|n| SignIns {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
        })
    }

    /// One attempt from `address`; `Err(wait)` when it tried too often.
    pub fn attempt(&self, address: IpAddr) -> Result<(), Duration> {
        if self.limiter.len() > REMEMBERED {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&address)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Whether a form post comes from the hub's own page: a browser names the page's
/// origin in `Origin` (and `Sec-Fetch-Site`); a post from another site is refused
/// even before the session's CSRF token is checked (sign-in has no session yet).
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Not a browser's cross-site post (those always carry Origin).
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| !host.is_empty() && authority == host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn a_post_from_another_site_is_not_same_origin() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:50052")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:50052"),
            ("origin", "http://127.0.0.1:50052")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:50052"),
            ("origin", "https://evil.test")
        ])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
    }
}
