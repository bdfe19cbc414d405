//! Request plumbing shared by every handler: who is asking (session or anonymous), CSRF checks,
//! cookies, rendering templates, redirects, and running blocking library calls off the executor.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use accounts::{Session, SessionId, User};
use askama::Template;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::app::App;
use crate::error::AppError;

/// Session cookie name.
pub const SESSION_COOKIE: &str = "mask_session";
/// Anonymous CSRF cookie (double-submit) for forms shown before login.
pub const CSRF_COOKIE: &str = "mask_csrf";
/// Largest urlencoded form body accepted.
pub const FORM_LIMIT: u64 = 16 * 1024;

/// Who sent a request.
pub struct Visitor {
    /// The logged-in user and their session, if any.
    pub user: Option<(User, Session)>,
    /// The anonymous CSRF token (from the cookie, or new).
    pub anon_csrf: String,
    /// True when `anon_csrf` is new and must be set as a cookie.
    pub new_anon_csrf: bool,
    /// The client's address, for login throttling.
    pub client: String,
}

impl Visitor {
    /// The CSRF token forms on this page must carry.
    pub fn csrf(&self) -> &str {
        match &self.user {
            Some((_, s)) => &s.csrf_token,
            None => &self.anon_csrf,
        }
    }

    /// 403 unless `submitted` matches this visitor's CSRF token.
    pub fn check_csrf(&self, submitted: Option<&String>) -> Result<(), Rejection> {
        let Some(submitted) = submitted else {
            return Err(AppError::Forbidden(
                "missing CSRF token: reload the page and try again".into(),
            )
            .reject());
        };
        let ok = match &self.user {
            Some((_, s)) => s.csrf_matches(submitted),
            None => {
                !self.new_anon_csrf
                    && constant_time_eq(self.anon_csrf.as_bytes(), submitted.as_bytes())
            }
        };
        if ok {
            Ok(())
        } else {
            Err(
                AppError::Forbidden("invalid CSRF token: reload the page and try again".into())
                    .reject(),
            )
        }
    }

    /// The template layout for a page titled `title`.
    pub fn layout(&self, app: &App, title: &str) -> Layout {
        Layout {
            title: title.to_string(),
            product: app.settings.product_name.clone(),
            user: self.user.as_ref().map(|(u, _)| u.username.clone()),
            is_admin: self.user.as_ref().is_some_and(|(u, _)| u.is_admin()),
            csrf: self.csrf().to_string(),
            notice: None,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

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

/// Identify the visitor: session cookie (checked with `accounts`), anonymous CSRF cookie, address.
pub fn visitor(app: Arc<App>) -> impl Filter<Extract = (Visitor,), Error = Rejection> + Clone {
    warp::cookie::optional::<String>(SESSION_COOKIE)
        .and(warp::cookie::optional::<String>(CSRF_COOKIE))
        .and(warp::addr::remote())
        .and(with_app(app))
        .and_then(
            |session: Option<String>,
             csrf: Option<String>,
             addr: Option<SocketAddr>,
             app: Arc<App>| async move {
                let user = match session {
                    Some(id) if id.len() == 64 => {
                        let accounts = app.accounts.clone();
                        blocking(move || Ok(accounts.session(&SessionId::new(id)).ok())).await?
                    }
                    _ => None,
                };
                let (anon_csrf, new_anon_csrf) = match csrf {
                    Some(c) if c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        (c, false)
                    }
                    _ => (random_hex(), true),
                };
                Ok::<_, Rejection>(Visitor {
                    user,
                    anon_csrf,
                    new_anon_csrf,
                    client: addr
                        .map(|a| a.ip().to_string())
                        .unwrap_or_else(|| "unknown".into()),
                })
            },
        )
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
    f: impl FnOnce() -> Result<T, Rejection> + Send + 'static,
) -> Result<T, Rejection> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(format!("blocking task: {e}")).reject())?
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
        .map_err(|e| AppError::Internal(format!("template: {e}")).reject())?;
    let mut r = warp::reply::with_status(warp::reply::html(html), status).into_response();
    if visitor.user.is_none() && visitor.new_anon_csrf {
        add_cookie(&mut r, &cookie(app, CSRF_COOKIE, &visitor.anon_csrf, None));
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
    if app.settings.secure_cookies {
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

/// Only local paths are followed after login (no `//host` or scheme): anything else goes home.
pub fn safe_next(next: Option<&String>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.contains("://") =>
        {
            n.clone()
        }
        _ => "/".into(),
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

/// The logged-in user, or a redirect to the login page (or to the forced password change).
// The error is the redirect itself, handed straight back to warp; boxing it gains nothing.
#[allow(clippy::result_large_err)]
pub fn require_user(visitor: &Visitor, path: &str) -> Result<(User, Session), Response> {
    match &visitor.user {
        None => Err(redirect(&format!("/login?next={}", encode_component(path)))),
        Some((u, _)) if u.must_change_password && path != "/password/change" => {
            Err(redirect("/password/change"))
        }
        Some((u, s)) => Ok((u.clone(), s.clone())),
    }
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
