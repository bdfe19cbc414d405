//! Plumbing shared by every handler: form bodies under limits, cookies, rendering templates,
//! redirects, the `next` parameter, security headers, and running blocking library calls off
//! the executor. Who is asking is [`crate::guards`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::app::App;
use crate::error::AppError;
use crate::guards::Visitor;

/// Session cookie name.
pub const SESSION_COOKIE: &str = "mask_session";
/// Anonymous CSRF cookie (double-submit) for forms shown before login.
pub const CSRF_COOKIE: &str = "mask_csrf";
/// Largest urlencoded form body accepted.
pub const FORM_LIMIT: u64 = 16 * 1024;

/// What every page template shows around its content.
pub struct Layout {
    /// Page title.
    pub title: String,
    /// Product name.
    pub product: String,
    /// Logged-in user name.
    pub user: Option<String>,
    /// Whether to show admin links.
    pub is_admin: bool,
    /// CSRF token for the forms.
    pub csrf: String,
    /// A one-line notice shown above the content.
    pub notice: Option<String>,
}

/// Pass the app to a handler.
pub fn with_app(app: Arc<App>) -> impl Filter<Extract = (Arc<App>,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// 256 random bits from the operating system's CSPRNG, as 64 hex characters.
pub fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Run a blocking library call on the blocking pool; a panic there is a 500, not a crash.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::internal("running a blocking task", e))?
}

/// A urlencoded form body, capped at [`FORM_LIMIT`] bytes whether or not the client sends a
/// `Content-Length` (413 beyond it). A non-form content type is 415.
pub fn form() -> impl Filter<Extract = (HashMap<String, String>,), Error = Rejection> + Clone {
    // The type is checked before the body is taken, so `form().or(other)` can still read it.
    warp::header::optional::<String>("content-type")
        .and_then(|ct: Option<String>| async move {
            let is_form = ct.as_deref().is_none_or(|c| {
                c.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
            if is_form {
                Ok(())
            } else {
                Err(warp::reject::custom(AppError::UnsupportedMediaType))
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(|body| async move {
            let bytes = within(FORM_TIMEOUT, read_capped(body, FORM_LIMIT))
                .await
                .map_err(warp::reject::custom)?;
            Ok::<_, Rejection>(form_urlencoded::parse(&bytes).into_owned().collect())
        })
}

/// A form body must arrive completely within this time (it is at most [`FORM_LIMIT`] bytes).
pub const FORM_TIMEOUT: Duration = Duration::from_secs(15);

/// Run `body_read` with a deadline; past it the client gets 408 and the connection's task ends,
/// so a client trickling its body cannot hold a connection (or an upload slot) open.
pub async fn within<T>(
    limit: Duration,
    body_read: impl std::future::Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    tokio::time::timeout(limit, body_read)
        .await
        .unwrap_or_else(|_| {
            Err(AppError::Timeout(format!(
                "the request body did not arrive within {} s",
                limit.as_secs()
            )))
        })
}

/// Collect a body stream, refusing (413) once it exceeds `limit` bytes.
pub async fn read_capped<S, B>(body: S, limit: u64) -> Result<Vec<u8>, AppError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures_util::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| AppError::BadRequest(format!("reading the body: {e}")))?;
        if out.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(AppError::TooLarge("request body too large".into()));
        }
        out.extend_from_slice(chunk.chunk());
    }
    Ok(out)
}

/// Render a template with a status; sets the anonymous CSRF cookie when it is new.
pub fn render(
    visitor: &Visitor,
    app: &App,
    status: StatusCode,
    page: &impl Template,
) -> Result<Response, Rejection> {
    let html = page
        .render()
        .map_err(|e| AppError::internal("rendering a page", e))?;
    let mut r = warp::reply::with_status(warp::reply::html(html), status).into_response();
    if let Some(token) = visitor.new_anon_csrf() {
        add_cookie(&mut r, &cookie(app, CSRF_COOKIE, token, None));
    }
    Ok(r)
}

/// A 303 redirect to a local path.
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A `Set-Cookie` value with our attributes; `max_age` `Some(0)` deletes it.
pub fn cookie(app: &App, name: &str, value: &str, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if app.settings.server.secure_cookies {
        c.push_str("; Secure");
    }
    c
}

/// Append a `Set-Cookie` header.
pub fn add_cookie(r: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Where to go after logging in: `next` when it names a path on our own origin, else home.
///
/// Browsers strip tabs and newlines from a `Location` and read a backslash as a slash, so
/// `/\t/evil.example` would leave the site: control characters and backslashes are refused,
/// and what is left is resolved against `public_url` and must keep its origin. The result is
/// the resolved path and query, as the URL parser wrote them.
pub fn safe_next(next: Option<&str>, public_url: &str) -> String {
    let home = || "/".to_string();
    let Some(next) = next else { return home() };
    if !next.starts_with('/') || next.chars().any(|c| c.is_control() || c == '\\') {
        return home();
    }
    let Ok(base) = url::Url::parse(public_url) else {
        return home();
    };
    let Ok(resolved) = base.join(next) else {
        return home();
    };
    if resolved.origin() != base.origin() || next.starts_with("//") {
        return home();
    }
    match resolved.query() {
        Some(q) => format!("{}?{q}", resolved.path()),
        None => resolved.path().to_string(),
    }
}

/// Percent-encode a path for the `next` query parameter.
pub fn encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Unix time as `YYYY-MM-DD HH:MM UTC`.
pub fn format_time(secs: i64) -> String {
    let rem = secs.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02} UTC",
        civil_from_days(secs.div_euclid(86_400)),
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since the Unix epoch as a `YYYY-MM-DD` date (proleptic Gregorian; Howard Hinnant's
/// civil-from-days).
pub fn civil_from_days(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A `YYYY-MM-DD` date as days since the Unix epoch; `None` unless it is a real date between
/// the years 1970 and 9999.
pub fn days_from_civil(date: &str) -> Option<i64> {
    let mut parts = date.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // Reject 2026-02-30 and the like: the round trip must give the same date back.
    (civil_from_days(days) == date).then_some(days)
}

/// A duration as people say it: "10 minutes", "1 hour", "3 days".
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs.is_multiple_of(86_400) && secs >= 86_400 {
        (secs / 86_400, "day")
    } else if secs.is_multiple_of(3600) && secs >= 3600 {
        (secs / 3600, "hour")
    } else if secs.is_multiple_of(60) && secs >= 60 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Security headers on every response.
pub fn security_headers() -> warp::http::HeaderMap {
    let mut h = warp::http::HeaderMap::new();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "http://127.0.0.1:5000";

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(600)), "10 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(72 * 3600)), "3 days");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(days_from_civil("1970-01-01"), Some(0));
        assert_eq!(days_from_civil("2026-12-04"), Some(20_791));
        assert_eq!(civil_from_days(20_791), "2026-12-04");
        assert_eq!(
            days_from_civil("2024-02-29")
                .map(civil_from_days)
                .as_deref(),
            Some("2024-02-29")
        );
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "26-01-01",
            "2026-1-01",
            "x",
            "2026-01-01-01",
            "",
        ] {
            assert_eq!(days_from_civil(bad), None, "{bad}");
        }
    }

    #[test]
    fn next_keeps_local_paths() {
        assert_eq!(safe_next(Some("/history"), PUBLIC), "/history");
        assert_eq!(
            safe_next(Some("/history?tab=all_masked"), PUBLIC),
            "/history?tab=all_masked"
        );
        assert_eq!(safe_next(None, PUBLIC), "/");
        // Encoded slashes stay encoded: a path on our origin, not a host.
        let p = safe_next(Some("/%2F%2Fevil.example/"), PUBLIC);
        assert!(p.starts_with("/%2F"), "{p}");
        assert_eq!(
            safe_next(Some("/a/../../b"), "https://example.org/app/"),
            "/b"
        );
    }

    #[test]
    fn next_refuses_everything_that_can_leave_the_origin() {
        for bad in [
            "//evil.example/",
            "/\t/evil.example",
            "/\t/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\\/evil.example",
            "https://evil.example/",
            "http://127.0.0.1:5000/ok-but-absolute",
            "evil.example",
            "javascript:alert(1)",
            "/\u{0}x",
            "",
        ] {
            assert_eq!(safe_next(Some(bad), PUBLIC), "/", "{bad:?}");
        }
    }
}
