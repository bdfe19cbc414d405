//! Part one of the site: login, the main page, password flows and user management.
//! Handlers parse, call `accounts` / `mailer` / `history-store`, render.

use std::collections::HashMap;
use std::sync::Arc;

use accounts::{NewUser, PageRequest, Role, TokenPurpose, UserId};
use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::app::App;
use crate::error::AppError;
use crate::web::{
    Layout, SESSION_COOKIE, Visitor, add_cookie, blocking, cookie, redirect, render, require_user,
    safe_next,
};

type Form = HashMap<String, String>;

fn field<'a>(form: &'a Form, name: &str) -> &'a str {
    form.get(name).map(String::as_str).unwrap_or("")
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    layout: Layout,
    message: String,
    link: Option<(String, String)>,
}

/// A page with a title, a sentence and an optional link.
pub fn message(
    v: &Visitor,
    app: &App,
    status: StatusCode,
    title: &str,
    text: &str,
    link: Option<(&str, &str)>,
) -> Result<Response, Rejection> {
    let page = MessagePage {
        layout: v.layout(app, title),
        message: text.to_string(),
        link: link.map(|(h, t)| (h.to_string(), t.to_string())),
    };
    render(v, app, status, &page)
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    username: String,
    error: Option<String>,
}

/// `GET /login`
pub async fn login_form(query: Form, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    if v.user.is_some() {
        return Ok(redirect(&safe_next(query.get("next"))));
    }
    let mut layout = v.layout(&app, "Log in");
    layout.notice = query.get("notice").and_then(|n| match n.as_str() {
        "password-set" => Some("Your password is set. Log in with it.".to_string()),
        "logged-out" => Some("You are logged out.".to_string()),
        _ => None,
    });
    let page = LoginPage {
        layout,
        next: safe_next(query.get("next")),
        username: String::new(),
        error: None,
    };
    render(&v, &app, StatusCode::OK, &page)
}

/// `POST /login` (`username`, `password`, `next`)
pub async fn login(form: Form, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    v.check_csrf(form.get("csrf_token"))?;
    let (username, password) = (
        field(&form, "username").to_string(),
        field(&form, "password").to_string(),
    );
    let accounts = app.accounts.clone();
    let client = v.client.clone();
    let old = v.user.as_ref().map(|(_, s)| s.id.clone());
    let u = username.clone();
    let result = blocking(move || {
        // A fresh session id at every login (no fixation); the old one, if any, ends.
        if let Some(old) = old {
            let _ = accounts.logout(&old);
        }
        Ok(accounts.login(&u, &password, &client))
    })
    .await?;
    match result {
        Ok((user, session)) => {
            let to = if user.must_change_password {
                "/password/change".to_string()
            } else {
                safe_next(form.get("next"))
            };
            let mut r = redirect(&to);
            let age = app.accounts.config().session_lifetime.as_secs();
            add_cookie(
                &mut r,
                &cookie(&app, SESSION_COOKIE, session.id.as_str(), Some(age)),
            );
            tracing::info!(user = %user.username, "login");
            Ok(r)
        }
        Err(e) => {
            let status = match e {
                accounts::Error::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
                accounts::Error::InvalidCredentials => StatusCode::UNAUTHORIZED,
                accounts::Error::Validation { .. } => StatusCode::UNAUTHORIZED,
                other => return Err(AppError::Internal(other.to_string()).reject()),
            };
            let error = if status == StatusCode::TOO_MANY_REQUESTS {
                "Too many failed attempts: try again later."
            } else {
                "Invalid user name or password."
            };
            let page = LoginPage {
                layout: v.layout(&app, "Log in"),
                next: safe_next(form.get("next")),
                username,
                error: Some(error.into()),
            };
            render(&v, &app, status, &page)
        }
    }
}

/// `POST /logout`
pub async fn logout(form: Form, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    v.check_csrf(form.get("csrf_token"))?;
    if let Some((_, s)) = v.user {
        let accounts = app.accounts.clone();
        blocking(move || {
            accounts
                .logout(&s.id)
                .map_err(|e| AppError::Internal(e.to_string()).reject())
        })
        .await?;
    }
    let mut r = redirect("/login?notice=logged-out");
    add_cookie(&mut r, &cookie(&app, SESSION_COOKIE, "", Some(0)));
    Ok(r)
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    layout: Layout,
    username: String,
}

/// `GET /`
pub async fn index(v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    let (user, _) = match require_user(&v, "/") {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let page = IndexPage {
        layout: v.layout(&app, "Home"),
        username: user.username,
    };
    render(&v, &app, StatusCode::OK, &page)
}

#[derive(Default)]
struct FieldErrors {
    form: Option<String>,
    username: Option<String>,
    email: Option<String>,
    old_password: Option<String>,
    new_password: Option<String>,
    confirm_password: Option<String>,
}

#[derive(Template)]
#[template(path = "password_change.html")]
struct ChangePage {
    layout: Layout,
    forced: bool,
    errors: FieldErrors,
}

/// `GET /password/change`
pub async fn change_form(v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    let (user, _) = match require_user(&v, "/password/change") {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let page = ChangePage {
        layout: v.layout(&app, "Change password"),
        forced: user.must_change_password,
        errors: FieldErrors::default(),
    };
    render(&v, &app, StatusCode::OK, &page)
}

/// `POST /password/change` (`old_password`, `new_password`, `confirm_password`)
pub async fn change(form: Form, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    let (user, session) = match require_user(&v, "/password/change") {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    v.check_csrf(form.get("csrf_token"))?;
    let mut errors = FieldErrors::default();
    let new = field(&form, "new_password").to_string();
    if new != field(&form, "confirm_password") {
        errors.confirm_password = Some("The two new passwords differ.".into());
    } else {
        let accounts = app.accounts.clone();
        let old = field(&form, "old_password").to_string();
        let keep = session.id.clone();
        let result =
            blocking(move || Ok(accounts.change_password(user.id, &old, &new, Some(&keep))))
                .await?;
        match result {
            Ok(_) => {
                let mut layout = v.layout(&app, "Home");
                layout.notice = Some("Your password has been changed.".into());
                let page = IndexPage {
                    layout,
                    username: user.username.clone(),
                };
                return render(&v, &app, StatusCode::OK, &page);
            }
            Err(accounts::Error::InvalidCredentials) => {
                errors.old_password = Some("The current password is wrong.".into())
            }
            Err(accounts::Error::Throttled { .. }) => {
                errors.old_password = Some("Too many failed attempts: try again later.".into())
            }
            Err(accounts::Error::Validation { message, .. }) => errors.new_password = Some(message),
            Err(e) => return Err(AppError::Internal(e.to_string()).reject()),
        }
    }
    let page = ChangePage {
        layout: v.layout(&app, "Change password"),
        forced: user.must_change_password,
        errors,
    };
    render(&v, &app, StatusCode::BAD_REQUEST, &page)
}

#[derive(Template)]
#[template(path = "password_forgot.html")]
struct ForgotPage {
    layout: Layout,
    error: Option<String>,
}

/// `GET /password/forgot`
pub async fn forgot_form(v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    let page = ForgotPage {
        layout: v.layout(&app, "Forgot password"),
        error: None,
    };
    render(&v, &app, StatusCode::OK, &page)
}

/// `POST /password/forgot` (`email`): the same answer whether or not the address is registered.
pub async fn forgot(form: Form, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    v.check_csrf(form.get("csrf_token"))?;
    let email = field(&form, "email").trim().to_string();
    if email.is_empty() || email.len() > 254 || !email.contains('@') {
        let page = ForgotPage {
            layout: v.layout(&app, "Forgot password"),
            error: Some("Enter the email address of your account.".into()),
        };
        return render(&v, &app, StatusCode::BAD_REQUEST, &page);
    }
    let accounts = app.accounts.clone();
    let issued = blocking(move || Ok(accounts.issue_reset_token(&email))).await?;
    match issued {
        Ok(Some((user, token))) => {
            let link = format!("{}/password/reset?token={token}", app.settings.public_url());
            let ttl = app.accounts.config().reset_token_ttl;
            if let Err(e) = app
                .mailer
                .send_password_reset(&user.email, &user.username, &link, ttl)
            {
                // Still the same answer to the visitor: the failure is the operator's to see.
                tracing::error!(error = %e, "could not queue a password reset email");
            }
        }
        Ok(None) => {}
        Err(e) => return Err(AppError::Internal(e.to_string()).reject()),
    }
    message(
        &v,
        &app,
        StatusCode::OK,
        "Check your email",
        "If that address is registered, a link is on its way. It is valid for 10 minutes.",
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

/// Which purpose a token has: reset links and invitations share one page.
fn verify_any(app: &App, token: &str) -> Result<(TokenPurpose, accounts::User), accounts::Error> {
    match app.accounts.verify_token(TokenPurpose::Reset, token) {
        Err(accounts::Error::TokenWrongPurpose { .. }) => app
            .accounts
            .verify_token(TokenPurpose::Invite, token)
            .map(|u| (TokenPurpose::Invite, u)),
        other => other.map(|u| (TokenPurpose::Reset, u)),
    }
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

/// `GET /password/reset?token=...`
pub async fn reset_form(query: Form, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    let token = field(&query, "token").to_string();
    let app2 = app.clone();
    let t = token.clone();
    let checked = blocking(move || Ok(verify_any(&app2, &t))).await?;
    match checked {
        Ok((purpose, _)) => {
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
        Err(e) => bad_link(&v, &app, &e),
    }
}

/// `POST /password/reset` (`token`, `new_password`, `confirm_password`)
pub async fn reset(form: Form, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    v.check_csrf(form.get("csrf_token"))?;
    let token = field(&form, "token").to_string();
    let new = field(&form, "new_password").to_string();
    let mut errors = FieldErrors::default();
    if new != field(&form, "confirm_password") {
        errors.confirm_password = Some("The two passwords differ.".into());
    } else {
        let app2 = app.clone();
        let t = token.clone();
        let result = blocking(move || {
            Ok(verify_any(&app2, &t)
                .and_then(|(purpose, _)| app2.accounts.set_password_with_token(purpose, &t, &new)))
        })
        .await?;
        match result {
            Ok(_) => return Ok(redirect("/login?notice=password-set")),
            Err(accounts::Error::Validation { message, .. }) => errors.new_password = Some(message),
            Err(
                e @ (accounts::Error::TokenExpired
                | accounts::Error::TokenUsed
                | accounts::Error::TokenInvalid
                | accounts::Error::TokenWrongPurpose { .. }),
            ) => return bad_link(&v, &app, &e),
            Err(e) => return Err(AppError::Internal(e.to_string()).reject()),
        }
    }
    let page = ResetPage {
        layout: v.layout(&app, "Reset password"),
        token,
        errors,
    };
    render(&v, &app, StatusCode::BAD_REQUEST, &page)
}

fn require_admin(v: &Visitor, path: &str) -> Result<Option<Response>, Rejection> {
    match require_user(v, path) {
        Err(r) => Ok(Some(r)),
        Ok((u, _)) if !u.is_admin() => {
            Err(AppError::Forbidden("administrators only".into()).reject())
        }
        Ok(_) => Ok(None),
    }
}

struct UserRow {
    id: i64,
    username: String,
    email: String,
    role: &'static str,
    created: String,
    last_login: String,
    invite: &'static str,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<UserRow>,
    page: u32,
    pages: u64,
    prev_page: Option<u32>,
    next_page: Option<u32>,
}

/// A Unix time as `YYYY-MM-DD HH:MM UTC`.
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// `GET /admin/users?page=N`
pub async fn users(query: Form, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    if let Some(r) = require_admin(&v, "/admin/users")? {
        return Ok(r);
    }
    let page: u32 = query
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|&p| p >= 1)
        .unwrap_or(1);
    let accounts = app.accounts.clone();
    let list = blocking(move || {
        accounts
            .list_users(PageRequest { page, per_page: 50 })
            .map_err(|e| AppError::BadRequest(e.to_string()).reject())
    })
    .await?;
    let pages = list.page_count();
    let rows = list
        .users
        .into_iter()
        .map(|u| UserRow {
            id: u.id.0,
            invite: if u.must_change_password && u.last_login_at.is_none() {
                "pending"
            } else {
                "accepted"
            },
            role: u.role.as_str(),
            created: format_time(u.created_at),
            last_login: u
                .last_login_at
                .map(format_time)
                .unwrap_or_else(|| "never".into()),
            username: u.username,
            email: u.email,
        })
        .collect();
    let mut layout = v.layout(&app, "Users");
    layout.notice = query
        .get("notice")
        .map(|n| match n.as_str() {
            "created" => "User created; the invitation is on its way.".to_string(),
            "deleted" => "User deleted, with their history.".to_string(),
            "invited" => "A new invitation is on its way.".to_string(),
            "last-admin" => "The last administrator cannot be deleted.".to_string(),
            _ => String::new(),
        })
        .filter(|n| !n.is_empty());
    let page = UsersPage {
        layout,
        users: rows,
        page,
        pages,
        prev_page: (page > 1).then(|| page - 1),
        next_page: (u64::from(page) < pages).then(|| page + 1),
    };
    render(&v, &app, StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "admin_user_new.html")]
struct NewUserPage {
    layout: Layout,
    username: String,
    email: String,
    role: String,
    errors: FieldErrors,
}

/// `GET /admin/users/new`
pub async fn new_user_form(v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    if let Some(r) = require_admin(&v, "/admin/users/new")? {
        return Ok(r);
    }
    let page = NewUserPage {
        layout: v.layout(&app, "New user"),
        username: String::new(),
        email: String::new(),
        role: "user".into(),
        errors: FieldErrors::default(),
    };
    render(&v, &app, StatusCode::OK, &page)
}

/// Generate an invitation token and queue the email with the default password and the link.
fn send_invitation(app: &App, user: &accounts::User, password: &str) -> Result<(), String> {
    let token = app
        .accounts
        .issue_invite_token(user.id)
        .map_err(|e| e.to_string())?;
    let link = format!("{}/password/reset?token={token}", app.settings.public_url());
    app.mailer
        .send_invitation(&user.email, &user.username, password, &link)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `POST /admin/users/new` (`username`, `email`, optional `role`)
pub async fn create_user(form: Form, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    if let Some(r) = require_admin(&v, "/admin/users/new")? {
        return Ok(r);
    }
    v.check_csrf(form.get("csrf_token"))?;
    let username = field(&form, "username").trim().to_string();
    let email = field(&form, "email").trim().to_string();
    let role_text = form
        .get("role")
        .map(String::as_str)
        .unwrap_or("user")
        .to_string();
    let mut errors = FieldErrors::default();
    let role = match role_text.as_str() {
        "admin" => Some(Role::Admin),
        "user" => Some(Role::User),
        _ => None,
    };
    let status;
    if let Some(role) = role {
        let app2 = app.clone();
        let new = NewUser {
            username: username.clone(),
            email: email.clone(),
            role,
            password: None,
        };
        let result = blocking(move || {
            Ok(app2.accounts.create_user(new).map(|(user, password)| {
                let sent = send_invitation(&app2, &user, password.as_deref().unwrap_or(""));
                (user, sent)
            }))
        })
        .await?;
        match result {
            Ok((user, sent)) => {
                if let Err(e) = sent {
                    tracing::error!(user = %user.username, error = %e, "invitation not queued");
                }
                return Ok(redirect("/admin/users?notice=created"));
            }
            Err(accounts::Error::UsernameTaken { .. }) => {
                status = StatusCode::CONFLICT;
                errors.username = Some("That user name is taken.".into());
            }
            Err(accounts::Error::EmailTaken { .. }) => {
                status = StatusCode::CONFLICT;
                errors.email = Some("That email address is already in use.".into());
            }
            Err(accounts::Error::Validation { field, message }) => {
                status = StatusCode::BAD_REQUEST;
                match field {
                    "username" => errors.username = Some(message),
                    "email" => errors.email = Some(message),
                    _ => errors.form = Some(message),
                }
            }
            Err(e) => return Err(AppError::Internal(e.to_string()).reject()),
        }
    } else {
        status = StatusCode::BAD_REQUEST;
        errors.form = Some("The role must be user or admin.".into());
    }
    let page = NewUserPage {
        layout: v.layout(&app, "New user"),
        username,
        email,
        role: role_text,
        errors,
    };
    render(&v, &app, status, &page)
}

/// `POST /admin/users/{id}/delete`: the user, their sessions, history and files.
pub async fn delete_user(
    id: i64,
    form: Form,
    v: Visitor,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    if let Some(r) = require_admin(&v, "/admin/users")? {
        return Ok(r);
    }
    v.check_csrf(form.get("csrf_token"))?;
    let app2 = app.clone();
    blocking(move || match app2.accounts.delete_user(UserId(id)) {
        Ok(_) => {
            app2.history
                .delete_user(history_store::UserId(id))
                .map_err(|e| {
                    AppError::Internal(format!("deleting history of user {id}: {e}")).reject()
                })?;
            Ok(redirect("/admin/users?notice=deleted"))
        }
        Err(accounts::Error::LastAdmin) => Ok(redirect("/admin/users?notice=last-admin")),
        Err(accounts::Error::NotFound { .. }) => Err(AppError::NotFound.reject()),
        Err(e) => Err(AppError::Internal(e.to_string()).reject()),
    })
    .await
}

/// `POST /admin/users/{id}/resend-invite`: a new default password and a new link.
pub async fn resend_invite(
    id: i64,
    form: Form,
    v: Visitor,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    if let Some(r) = require_admin(&v, "/admin/users")? {
        return Ok(r);
    }
    v.check_csrf(form.get("csrf_token"))?;
    let app2 = app.clone();
    blocking(move || {
        let user = app2
            .accounts
            .user(UserId(id))
            .map_err(|_| AppError::NotFound.reject())?;
        let password = app2
            .accounts
            .set_password(user.id, None)
            .map_err(|e| AppError::Internal(e.to_string()).reject())?
            .unwrap_or_default();
        send_invitation(&app2, &user, &password).map_err(|e| AppError::Internal(e).reject())?;
        Ok(redirect("/admin/users?notice=invited"))
    })
    .await
}

struct DeliveryRow {
    when: String,
    to: String,
    kind: String,
    status: String,
}

#[derive(Template)]
#[template(path = "admin_mail.html")]
struct MailPage {
    layout: Layout,
    deliveries: Vec<DeliveryRow>,
}

/// `GET /admin/mail`: the delivery log.
pub async fn mail_log(query: Form, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    if let Some(r) = require_admin(&v, "/admin/mail")? {
        return Ok(r);
    }
    let deliveries = app
        .mailer
        .deliveries()
        .into_iter()
        .map(|d| DeliveryRow {
            when: d
                .updated
                .duration_since(std::time::UNIX_EPOCH)
                .map(|t| format_time(t.as_secs() as i64))
                .unwrap_or_default(),
            to: d.to,
            kind: d.kind.to_string(),
            status: match d.status {
                mailer::DeliveryStatus::Queued => "queued".to_string(),
                mailer::DeliveryStatus::Sent => format!("sent (attempts: {})", d.attempts),
                mailer::DeliveryStatus::Failed { reason } => {
                    format!("failed after {} attempt(s): {reason}", d.attempts)
                }
                mailer::DeliveryStatus::Retrying { attempt, reason } => {
                    format!("retrying after attempt {attempt}: {reason}")
                }
                _ => "unknown".to_string(),
            },
        })
        .collect();
    let mut layout = v.layout(&app, "Mail delivery log");
    if query.contains_key("sent") {
        layout.notice = Some("Test email queued.".into());
    }
    render(&v, &app, StatusCode::OK, &MailPage { layout, deliveries })
}

/// `POST /admin/mail/test` (`to`)
pub async fn mail_test(form: Form, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    if let Some(r) = require_admin(&v, "/admin/mail")? {
        return Ok(r);
    }
    v.check_csrf(form.get("csrf_token"))?;
    app.mailer
        .send_test(field(&form, "to"))
        .map_err(|e| AppError::BadRequest(e.to_string()).reject())?;
    Ok(redirect("/admin/mail?sent=1"))
}

/// `GET /healthz`: 200 when the databases answer.
pub async fn healthz(app: Arc<App>) -> Result<Response, Rejection> {
    let app2 = app.clone();
    let ok = blocking(move || {
        Ok(app2
            .accounts
            .list_users(PageRequest {
                page: 1,
                per_page: 1,
            })
            .is_ok()
            && app2.history.counts(history_store::UserId(0)).is_ok())
    })
    .await?;
    Ok(if ok {
        warp::reply::with_status("ok\n", StatusCode::OK).into_response()
    } else {
        warp::reply::with_status("database unavailable\n", StatusCode::SERVICE_UNAVAILABLE)
            .into_response()
    })
}
