//! Request guards: warp filters that establish who is asking before a handler runs.
//!
//! - [`visitor`]: anyone; the session if there is one, the anonymous CSRF token, the address.
//! - [`signed_in`]: a logged-in user ([`SignedIn`]), or the [`LoginRequired`] rejection that the
//!   one `recover` turns into the redirect to the login page (and [`PasswordChangeRequired`]
//!   while a new password must be chosen).
//! - [`admin`]: an administrator ([`Admin`]), 403 for other users.
//! - [`csrf_form`]: a urlencoded form whose `csrf_token` matches the guard's session (or the
//!   anonymous cookie), as a [`CheckedForm`]; 403 otherwise.
//!
//! [`SignedIn`], [`Admin`] and [`CheckedForm`] can only be made here, so a handler that takes one
//! cannot be reached without its check:
//!
//! ```compile_fail
//! // A handler cannot conjure a user: only the guards can finish building one.
//! fn forged(user: accounts::User, session: accounts::Session, v: webapp::guards::Visitor) {
//!     let _ = webapp::guards::SignedIn { user, session, visitor: v, _private: () };
//! }
//! ```
//!
//! ```compile_fail
//! // Nor promote a user to administrator.
//! fn promoted(s: webapp::guards::SignedIn) -> webapp::guards::Admin {
//!     webapp::guards::Admin(s)
//! }
//! ```
//!
//! ```compile_fail
//! // Nor a checked form.
//! let _ = webapp::guards::CheckedForm(std::collections::HashMap::new());
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use warp::multipart::FormData;

use accounts::{Session, SessionId, User};
use warp::{Filter, Rejection};

use crate::app::App;
use crate::client::{ClientAddr, client_addr};
use crate::error::{AppError, LoginRequired, PasswordChangeRequired};
use crate::multipart::{Batch, Upload, drain, read_batch, read_upload, upload_body};
use crate::pool::Ticket;
use crate::web::{CSRF_COOKIE, Layout, SESSION_COOKIE, blocking, form, random_hex, with_app};

/// Who sent a request.
pub struct Visitor {
    /// The logged-in user and their session, if any.
    session: Option<(User, Session)>,
    /// The anonymous CSRF token (from the cookie, or new).
    anon_csrf: String,
    /// True when `anon_csrf` is new and must be set as a cookie.
    new_anon_csrf: bool,
    /// The client's address, for per-address limits.
    pub client: ClientAddr,
}

impl Visitor {
    /// The logged-in user and their session, if any.
    pub fn session(&self) -> Option<&(User, Session)> {
        self.session.as_ref()
    }

    /// The anonymous CSRF token, when it is new and must be set as a cookie.
    pub fn new_anon_csrf(&self) -> Option<&str> {
        (self.session.is_none() && self.new_anon_csrf).then_some(self.anon_csrf.as_str())
    }

    /// The CSRF token forms on this page must carry.
    pub fn csrf(&self) -> &str {
        match &self.session {
            Some((_, s)) => &s.csrf_token,
            None => &self.anon_csrf,
        }
    }

    /// Whether `submitted` is this visitor's CSRF token (compared in constant time).
    fn csrf_matches(&self, submitted: &str) -> bool {
        match &self.session {
            Some((_, s)) => s.csrf_matches(submitted),
            None => {
                !self.new_anon_csrf
                    && constant_time_eq(self.anon_csrf.as_bytes(), submitted.as_bytes())
            }
        }
    }

    /// 403 unless `submitted` is this visitor's CSRF token.
    pub fn check_csrf(&self, submitted: Option<&str>) -> Result<(), AppError> {
        match submitted {
            None => Err(AppError::Forbidden(
                "missing CSRF token: reload the page and try again".into(),
            )),
            Some(t) if self.csrf_matches(t) => Ok(()),
            Some(_) => Err(AppError::Forbidden(
                "invalid CSRF token: reload the page and try again".into(),
            )),
        }
    }

    /// The template layout for a page titled `title`.
    pub fn layout(&self, app: &App, title: &str) -> Layout {
        Layout {
            title: title.to_string(),
            product: app.settings.server.product_name.clone(),
            user: self.session.as_ref().map(|(u, _)| u.username.clone()),
            is_admin: self.session.as_ref().is_some_and(|(u, _)| u.is_admin()),
            csrf: self.csrf().to_string(),
            notice: None,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A logged-in user who may use the site (no password change pending, unless the guard was
/// [`signed_in_to_change_password`]).
// Not `#[non_exhaustive]`: that would still let handlers in this crate build one; the private
// field keeps construction inside this module.
#[allow(clippy::manual_non_exhaustive)]
pub struct SignedIn {
    /// The user.
    pub user: User,
    /// Their session.
    pub session: Session,
    /// The request's visitor (for layouts and CSRF).
    pub visitor: Visitor,
    /// Only the guards make one.
    _private: (),
}

/// A logged-in administrator (the signed-in user, who is one).
pub struct Admin(SignedIn);

impl std::ops::Deref for Admin {
    type Target = SignedIn;
    fn deref(&self) -> &SignedIn {
        &self.0
    }
}

/// A urlencoded form whose CSRF token was checked.
pub struct CheckedForm(HashMap<String, String>);

impl CheckedForm {
    /// A field's value, empty when absent.
    pub fn field(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }

    /// A field's value, `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// A multipart form of a signed-in user, admitted to the detection pool, read, and with its
/// CSRF token checked: an upload ([`Upload`]) or a batch ([`Batch`]).
#[allow(clippy::manual_non_exhaustive)] // as for `SignedIn`
pub struct Checked<T> {
    /// The pool place the form holds until its detections end.
    pub ticket: Ticket,
    /// The form's fields and files.
    pub form: T,
    /// Only the guards make one.
    _private: (),
}

/// An upload form, checked.
pub type CheckedUpload = Checked<Upload>;

/// A multipart form the [`csrf_multipart`] guard can read.
pub trait MultipartForm: Sized + Send + 'static {
    /// Read the whole body, at most `max` bytes of files, under the upload deadlines.
    fn read(
        form: FormData,
        max: u64,
    ) -> impl std::future::Future<Output = Result<Self, AppError>> + Send;
    /// The text fields.
    fn fields(&self) -> &HashMap<String, String>;
}

impl MultipartForm for Upload {
    fn read(
        form: FormData,
        max: u64,
    ) -> impl std::future::Future<Output = Result<Self, AppError>> + Send {
        read_upload(form, max)
    }
    fn fields(&self) -> &HashMap<String, String> {
        &self.fields
    }
}

impl MultipartForm for Batch {
    fn read(
        form: FormData,
        max: u64,
    ) -> impl std::future::Future<Output = Result<Self, AppError>> + Send {
        read_batch(form, max)
    }
    fn fields(&self) -> &HashMap<String, String> {
        &self.fields
    }
}

/// What the CSRF check compares against.
pub trait HasVisitor {
    /// The request's visitor.
    fn visitor(&self) -> &Visitor;
}

impl HasVisitor for Visitor {
    fn visitor(&self) -> &Visitor {
        self
    }
}

impl HasVisitor for SignedIn {
    fn visitor(&self) -> &Visitor {
        &self.visitor
    }
}

impl HasVisitor for Admin {
    fn visitor(&self) -> &Visitor {
        &self.0.visitor
    }
}

/// Identify the visitor: session cookie (checked with `accounts`), anonymous CSRF cookie, address.
pub fn visitor(app: Arc<App>) -> impl Filter<Extract = (Visitor,), Error = Rejection> + Clone {
    let trusted = app.trusted_proxies.clone();
    warp::cookie::optional::<String>(SESSION_COOKIE)
        .and(warp::cookie::optional::<String>(CSRF_COOKIE))
        .and(client_addr(trusted))
        .and(with_app(app))
        .and_then(
            |session: Option<String>,
             csrf: Option<String>,
             client: ClientAddr,
             app: Arc<App>| async move {
                let session = match session {
                    Some(id) if id.len() == 64 => {
                        let accounts = app.accounts.clone();
                        match blocking(move || Ok(accounts.session(&SessionId::new(id)))).await? {
                            Ok(found) => Some(found),
                            Err(accounts::Error::SessionInvalid) => None,
                            Err(e) => return Err(AppError::from(e).reject()),
                        }
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
                    session,
                    anon_csrf,
                    new_anon_csrf,
                    client,
                })
            },
        )
}

/// Where to come back to after logging in: the path of a `GET`; home after anything else.
fn come_back_to()
-> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::method()
        .and(warp::path::full())
        .map(|m: warp::http::Method, p: warp::path::FullPath| {
            (m == warp::http::Method::GET && p.as_str() != "/").then(|| p.as_str().to_string())
        })
}

fn signed_in_with(
    app: Arc<App>,
    allow_pending_change: bool,
) -> impl Filter<Extract = (SignedIn,), Error = Rejection> + Clone {
    visitor(app).and(come_back_to()).and_then(
        move |mut v: Visitor, next: Option<String>| async move {
            match v.session.clone() {
                None => Err(warp::reject::custom(LoginRequired { next })),
                Some((user, _)) if user.must_change_password && !allow_pending_change => {
                    Err(warp::reject::custom(PasswordChangeRequired))
                }
                Some((user, session)) => {
                    v.session = Some((user.clone(), session.clone()));
                    Ok(SignedIn {
                        user,
                        session,
                        visitor: v,
                        _private: (),
                    })
                }
            }
        },
    )
}

/// A logged-in user (see the module doc).
pub fn signed_in(app: Arc<App>) -> impl Filter<Extract = (SignedIn,), Error = Rejection> + Clone {
    signed_in_with(app, false)
}

/// A logged-in user, also one who must choose a new password first: for the password change
/// form itself.
pub fn signed_in_to_change_password(
    app: Arc<App>,
) -> impl Filter<Extract = (SignedIn,), Error = Rejection> + Clone {
    signed_in_with(app, true)
}

/// A logged-in administrator; other users get 403.
pub fn admin(app: Arc<App>) -> impl Filter<Extract = (Admin,), Error = Rejection> + Clone {
    signed_in(app).and_then(|s: SignedIn| async move {
        if s.user.is_admin() {
            Ok(Admin(s))
        } else {
            Err(AppError::Forbidden("administrators only".into()).reject())
        }
    })
}

/// `guard`, then a urlencoded form body whose `csrf_token` matches the guard's visitor.
pub fn csrf_form<G, F>(
    guard: F,
) -> impl Filter<Extract = (G, CheckedForm), Error = Rejection> + Clone
where
    G: HasVisitor + Send + 'static,
    F: Filter<Extract = (G,), Error = Rejection> + Clone,
{
    guard
        .and(form())
        .and_then(|g: G, f: HashMap<String, String>| async move {
            g.visitor()
                .check_csrf(f.get("csrf_token").map(String::as_str))
                .map_err(AppError::reject)?;
            Ok::<_, Rejection>((g, CheckedForm(f)))
        })
        .untuple_one()
}

/// A logged-in user's multipart form (an upload or a batch): a place in the detection pool is
/// taken for the client's address before the body is read (so bodies in memory stay bounded),
/// then the body is read and its `csrf_token` field checked (a wrong token is 403). Refusals
/// that the form's page should show (pool full, body too large or too slow) come back as the
/// `Err` beside the user, after the rest of the body was drained so the client sees the answer.
pub fn csrf_multipart<T: MultipartForm>(
    app: Arc<App>,
) -> impl Filter<Extract = (SignedIn, Result<Checked<T>, AppError>), Error = Rejection> + Clone {
    let max = app.settings.server.max_upload_bytes;
    let pool = app.pool.clone();
    signed_in(app.clone())
        .and(upload_body(&app))
        .and_then(move |s: SignedIn, form| {
            let pool = pool.clone();
            async move {
                let ticket = match pool.admit(&s.visitor.client.to_string()) {
                    Ok(t) => t,
                    Err(refused) => {
                        drain(form).await;
                        return Ok((s, Err(AppError::from(refused))));
                    }
                };
                let form = match T::read(form, max).await {
                    Ok(f) => f,
                    Err(e) => return Ok((s, Err(e))),
                };
                s.visitor
                    .check_csrf(form.fields().get("csrf_token").map(String::as_str))
                    .map_err(AppError::reject)?;
                Ok::<_, Rejection>((
                    s,
                    Ok(Checked {
                        ticket,
                        form,
                        _private: (),
                    }),
                ))
            }
        })
        .untuple_one()
}

/// [`csrf_multipart`] for the one-photo upload form.
pub fn csrf_upload(
    app: Arc<App>,
) -> impl Filter<Extract = (SignedIn, Result<CheckedUpload, AppError>), Error = Rejection> + Clone {
    csrf_multipart::<Upload>(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
