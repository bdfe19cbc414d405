//! Signing in and out, and the password flows: change, forgot, reset (and invitation) links.

use std::collections::HashMap;
use std::sync::Arc;

use accounts::TokenPurpose;
use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{Route, message, route};
use crate::app::App;
use crate::error::AppError;
use crate::guards::{
    CheckedForm, SignedIn, Visitor, csrf_form, signed_in_to_change_password, visitor,
};
use crate::services;
use crate::web::{
    Layout, SESSION_COOKIE, add_cookie, blocking, cookie, human_duration, redirect, render,
    safe_next,
};

type Query = HashMap<String, String>;

/// Every route of this area.
pub fn routes(app: &Arc<App>) -> Route {
    route(login_page(app))
        .or(route(login(app)))
        .unify()
        .or(route(logout(app)))
        .unify()
        .or(route(change_password_page(app)))
        .unify()
        .or(route(change_password(app)))
        .unify()
        .or(route(forgot_password_page(app)))
        .unify()
        .or(route(forgot_password(app)))
        .unify()
        .or(route(reset_password_page(app)))
        .unify()
        .or(route(reset_password(app)))
        .unify()
        .boxed()
}

/// `GET /login?next=PATH`
fn login_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("login")
        .and(warp::get())
        .and(warp::query::<Query>())
        .and(visitor(app.clone()))
        .and_then(move |q: Query, v: Visitor| show_login(a.clone(), q, v))
}

/// `POST /login` (`username`, `password`, `next`)
fn login(app: &Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("login")
        .and(warp::post())
        .and(csrf_form(visitor(app.clone())))
        .and_then(move |v: Visitor, f: CheckedForm| log_in(a.clone(), v, f))
}

/// `POST /logout`
fn logout(app: &Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("logout")
        .and(warp::post())
        .and(csrf_form(visitor(app.clone())))
        .and_then(move |v: Visitor, _: CheckedForm| log_out(a.clone(), v))
}

/// `GET /password/change`
fn change_password_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("password" / "change")
        .and(warp::get())
        .and(signed_in_to_change_password(app.clone()))
        .and_then(move |s: SignedIn| show_change(a.clone(), s))
}

/// `POST /password/change` (`old_password`, `new_password`, `confirm_password`)
fn change_password(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("password" / "change")
        .and(warp::post())
        .and(csrf_form(signed_in_to_change_password(app.clone())))
        .and_then(move |s: SignedIn, f: CheckedForm| change(a.clone(), s, f))
}

/// `GET /password/forgot`
fn forgot_password_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("password" / "forgot")
        .and(warp::get())
        .and(visitor(app.clone()))
        .and_then(move |v: Visitor| show_forgot(a.clone(), v))
}

/// `POST /password/forgot` (`email`)
fn forgot_password(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("password" / "forgot")
        .and(warp::post())
        .and(csrf_form(visitor(app.clone())))
        .and_then(move |v: Visitor, f: CheckedForm| forgot(a.clone(), v, f))
}

/// `GET /password/reset?token=...`
fn reset_password_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("password" / "reset")
        .and(warp::get())
        .and(warp::query::<Query>())
        .and(visitor(app.clone()))
        .and_then(move |q: Query, v: Visitor| show_reset(a.clone(), q, v))
}

/// `POST /password/reset` (`token`, `new_password`, `confirm_password`)
fn reset_password(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("password" / "reset")
        .and(warp::post())
        .and(csrf_form(visitor(app.clone())))
        .and_then(move |v: Visitor, f: CheckedForm| reset(a.clone(), v, f))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    username: String,
    error: Option<String>,
}

async fn show_login(app: Arc<App>, query: Query, v: Visitor) -> Result<Response, Rejection> {
    let next = safe_next(
        query.get("next").map(String::as_str),
        &app.settings.public_url(),
    );
    if v.session().is_some() {
        return Ok(redirect(&next));
    }
    let mut layout = v.layout(&app, "Log in");
    layout.notice = query.get("notice").and_then(|n| match n.as_str() {
        "password-set" => Some("Your password is set. Log in with it.".to_string()),
        "logged-out" => Some("You are logged out.".to_string()),
        _ => None,
    });
    let page = LoginPage {
        layout,
        next,
        username: String::new(),
        error: None,
    };
    render(&v, &app, StatusCode::OK, &page)
}

async fn log_in(app: Arc<App>, v: Visitor, form: CheckedForm) -> Result<Response, Rejection> {
    let username = form.field("username").to_string();
    let password = form.field("password").to_string();
    let accounts = app.accounts.clone();
    let client = v.client.to_string();
    let old = v.session().map(|(_, s)| s.id.clone());
    let u = username.clone();
    let result = blocking(move || {
        // A fresh session id at every login (no fixation); the old one, if any, ends.
        if let Some(old) = old {
            accounts.logout(&old)?;
        }
        Ok(accounts.login(&u, &password, &client))
    })
    .await?;
    let next = safe_next(form.get("next"), &app.settings.public_url());
    let (status, error) = match result {
        Ok((user, session)) => {
            let to = if user.must_change_password {
                "/password/change"
            } else {
                &next
            };
            let mut r = redirect(to);
            let age = app.accounts.config().session_lifetime.as_secs();
            add_cookie(
                &mut r,
                &cookie(&app, SESSION_COOKIE, session.id.as_str(), Some(age)),
            );
            tracing::info!(user = %user.username, "login");
            return Ok(r);
        }
        Err(accounts::Error::Throttled { .. }) => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed attempts: try again later.",
        ),
        Err(accounts::Error::InvalidCredentials | accounts::Error::Validation { .. }) => {
            (StatusCode::UNAUTHORIZED, "Invalid user name or password.")
        }
        Err(e) => return Err(AppError::from(e).into()),
    };
    let page = LoginPage {
        layout: v.layout(&app, "Log in"),
        next,
        username,
        error: Some(error.into()),
    };
    render(&v, &app, status, &page)
}

async fn log_out(app: Arc<App>, v: Visitor) -> Result<Response, Rejection> {
    if let Some((_, s)) = v.session() {
        let (accounts, id) = (app.accounts.clone(), s.id.clone());
        blocking(move || Ok(accounts.logout(&id)?)).await?;
    }
    let mut r = redirect("/login?notice=logged-out");
    add_cookie(&mut r, &cookie(&app, SESSION_COOKIE, "", Some(0)));
    Ok(r)
}

/// Messages next to the fields of the password and user forms.
#[derive(Default)]
pub(super) struct FieldErrors {
    pub(super) form: Option<String>,
    pub(super) username: Option<String>,
    pub(super) email: Option<String>,
    pub(super) old_password: Option<String>,
    pub(super) new_password: Option<String>,
    pub(super) confirm_password: Option<String>,
}

#[derive(Template)]
#[template(path = "password_change.html")]
struct ChangePage {
    layout: Layout,
    forced: bool,
    errors: FieldErrors,
}

async fn show_change(app: Arc<App>, s: SignedIn) -> Result<Response, Rejection> {
    let page = ChangePage {
        layout: s.visitor.layout(&app, "Change password"),
        forced: s.user.must_change_password,
        errors: FieldErrors::default(),
    };
    render(&s.visitor, &app, StatusCode::OK, &page)
}

async fn change(app: Arc<App>, s: SignedIn, form: CheckedForm) -> Result<Response, Rejection> {
    let mut errors = FieldErrors::default();
    let new = form.field("new_password").to_string();
    if new != form.field("confirm_password") {
        errors.confirm_password = Some("The two new passwords differ.".into());
    } else {
        let accounts = app.accounts.clone();
        let old = form.field("old_password").to_string();
        let (id, keep) = (s.user.id, s.session.id.clone());
        let result =
            blocking(move || Ok(accounts.change_password(id, &old, &new, Some(&keep)))).await?;
        match result {
            Ok(_) => {
                let mut layout = s.visitor.layout(&app, "Home");
                layout.notice = Some("Your password has been changed.".into());
                let page = super::site::IndexPage {
                    layout,
                    username: s.user.username.clone(),
                };
                return render(&s.visitor, &app, StatusCode::OK, &page);
            }
            Err(accounts::Error::InvalidCredentials) => {
                errors.old_password = Some("The current password is wrong.".into())
            }
            Err(accounts::Error::Throttled { .. }) => {
                errors.old_password = Some("Too many failed attempts: try again later.".into())
            }
            Err(accounts::Error::Validation { message, .. }) => errors.new_password = Some(message),
            Err(e) => return Err(AppError::from(e).into()),
        }
    }
    let page = ChangePage {
        layout: s.visitor.layout(&app, "Change password"),
        forced: s.user.must_change_password,
        errors,
    };
    render(&s.visitor, &app, StatusCode::BAD_REQUEST, &page)
}

#[derive(Template)]
#[template(path = "password_forgot.html")]
struct ForgotPage {
    layout: Layout,
    error: Option<String>,
}

async fn show_forgot(app: Arc<App>, v: Visitor) -> Result<Response, Rejection> {
    let page = ForgotPage {
        layout: v.layout(&app, "Forgot password"),
        error: None,
    };
    render(&v, &app, StatusCode::OK, &page)
}

/// The same answer whether or not the address is registered.
async fn forgot(app: Arc<App>, v: Visitor, form: CheckedForm) -> Result<Response, Rejection> {
    let email = form.field("email").trim().to_string();
    if email.is_empty() || email.len() > 254 || !email.contains('@') {
        let page = ForgotPage {
            layout: v.layout(&app, "Forgot password"),
            error: Some("Enter the email address of your account.".into()),
        };
        return render(&v, &app, StatusCode::BAD_REQUEST, &page);
    }
    let a = app.clone();
    blocking(move || Ok(services::request_password_reset(&a, &email)?)).await?;
    let valid_for = human_duration(app.accounts.config().reset_token_ttl);
    message(
        &v,
        &app,
        StatusCode::OK,
        "Check your email",
        &format!(
            "If that address is registered, a link is on its way. It is valid for {valid_for}."
        ),
        Some(("/login", "Back to log in")),
    )
}

#[derive(Template)]
#[template(path = "password_reset.html")]
struct ResetPage {
    layout: Layout,
    token: String,
    errors: FieldErrors,
}

fn bad_link(v: &Visitor, app: &App, e: &accounts::Error) -> Result<Response, Rejection> {
    let why = match e {
        accounts::Error::TokenExpired => "This link has expired.",
        accounts::Error::TokenUsed => "This link has already been used.",
        _ => "This link is not valid.",
    };
    message(
        v,
        app,
        StatusCode::BAD_REQUEST,
        "Link not valid",
        &format!("{why} Ask for a new one."),
        Some(("/password/forgot", "Send me a new link")),
    )
}

fn is_link_error(e: &accounts::Error) -> bool {
    matches!(
        e,
        accounts::Error::TokenExpired
            | accounts::Error::TokenUsed
            | accounts::Error::TokenInvalid
            | accounts::Error::TokenWrongPurpose { .. }
    )
}

async fn show_reset(app: Arc<App>, query: Query, v: Visitor) -> Result<Response, Rejection> {
    let token = query.get("token").cloned().unwrap_or_default();
    let (a, t) = (app.clone(), token.clone());
    match blocking(move || Ok(services::check_link(&a, &t))).await? {
        Ok(purpose) => {
            let title = if purpose == TokenPurpose::Invite {
                "Choose your password"
            } else {
                "Reset password"
            };
            let page = ResetPage {
                layout: v.layout(&app, title),
                token,
                errors: FieldErrors::default(),
            };
            render(&v, &app, StatusCode::OK, &page)
        }
        Err(services::ServiceError::Accounts(e)) if is_link_error(&e) => bad_link(&v, &app, &e),
        Err(e) => Err(AppError::from(e).into()),
    }
}

async fn reset(app: Arc<App>, v: Visitor, form: CheckedForm) -> Result<Response, Rejection> {
    let token = form.field("token").to_string();
    let new = form.field("new_password").to_string();
    let mut errors = FieldErrors::default();
    if new != form.field("confirm_password") {
        errors.confirm_password = Some("The two passwords differ.".into());
    } else {
        let (a, t) = (app.clone(), token.clone());
        match blocking(move || Ok(services::use_link(&a, &t, &new))).await? {
            Ok(_) => return Ok(redirect("/login?notice=password-set")),
            Err(services::ServiceError::Accounts(accounts::Error::Validation {
                message, ..
            })) => errors.new_password = Some(message),
            Err(services::ServiceError::Accounts(e)) if is_link_error(&e) => {
                return bad_link(&v, &app, &e);
            }
            Err(e) => return Err(AppError::from(e).into()),
        }
    }
    let page = ResetPage {
        layout: v.layout(&app, "Reset password"),
        token,
        errors,
    };
    render(&v, &app, StatusCode::BAD_REQUEST, &page)
}
