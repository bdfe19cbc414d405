//! User management and the mail delivery log, for administrators.

use std::collections::HashMap;
use std::sync::Arc;

use accounts::{PageRequest, Role, UserId};
use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::auth::FieldErrors;
use super::{Route, route};
use crate::app::App;
use crate::error::AppError;
use crate::guards::{Admin, CheckedForm, admin, csrf_form};
use crate::services;
use crate::web::{Layout, blocking, format_time, redirect, render};

type Query = HashMap<String, String>;

/// Every route of this area.
pub fn routes(app: &Arc<App>) -> Route {
    route(users_page(app))
        .or(route(new_user_page(app)))
        .unify()
        .or(route(create_user(app)))
        .unify()
        .or(route(delete_user(app)))
        .unify()
        .or(route(resend_invitation(app)))
        .unify()
        .or(route(mail_log_page(app)))
        .unify()
        .or(route(send_test_mail(app)))
        .unify()
        .boxed()
}

/// `GET /admin/users?page=N`
fn users_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("admin" / "users")
        .and(warp::get())
        .and(warp::query::<Query>())
        .and(admin(app.clone()))
        .and_then(move |q: Query, ad: Admin| show_users(a.clone(), q, ad))
}

/// `GET /admin/users/new`
fn new_user_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("admin" / "users" / "new")
        .and(warp::get())
        .and(admin(app.clone()))
        .and_then(move |ad: Admin| show_new_user(a.clone(), ad))
}

/// `POST /admin/users/new` (`username`, `email`, optional `role`)
fn create_user(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("admin" / "users" / "new")
        .and(warp::post())
        .and(csrf_form(admin(app.clone())))
        .and_then(move |ad: Admin, f: CheckedForm| create(a.clone(), ad, f))
}

/// `POST /admin/users/{id}/delete`: the user, their sessions, history and files.
fn delete_user(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("admin" / "users" / i64 / "delete")
        .and(warp::post())
        .and(csrf_form(admin(app.clone())))
        .and_then(move |id: i64, _: Admin, _: CheckedForm| delete(a.clone(), UserId(id)))
}

/// `POST /admin/users/{id}/resend-invite`: a new default password and a new link.
fn resend_invitation(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("admin" / "users" / i64 / "resend-invite")
        .and(warp::post())
        .and(csrf_form(admin(app.clone())))
        .and_then(move |id: i64, _: Admin, _: CheckedForm| resend(a.clone(), UserId(id)))
}

/// `GET /admin/mail`: the delivery log.
fn mail_log_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("admin" / "mail")
        .and(warp::get())
        .and(warp::query::<Query>())
        .and(admin(app.clone()))
        .and_then(move |q: Query, ad: Admin| show_mail_log(a.clone(), q, ad))
}

/// `POST /admin/mail/test` (`to`)
fn send_test_mail(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("admin" / "mail" / "test")
        .and(warp::post())
        .and(csrf_form(admin(app.clone())))
        .and_then(move |_: Admin, f: CheckedForm| mail_test(a.clone(), f))
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

async fn show_users(app: Arc<App>, query: Query, s: Admin) -> Result<Response, Rejection> {
    let page: u32 = query
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|&p| p >= 1)
        .unwrap_or(1);
    let accounts = app.accounts.clone();
    let list =
        blocking(move || Ok(accounts.list_users(PageRequest { page, per_page: 50 })?)).await?;
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
    let mut layout = s.visitor.layout(&app, "Users");
    layout.notice = query.get("notice").and_then(|n| match n.as_str() {
        "created" => Some("User created; the invitation is on its way.".to_string()),
        "created-no-mail" => Some(
            "User created, but the invitation could not be queued: see the mail log, then resend it."
                .to_string(),
        ),
        "deleted" => Some("User deleted, with their history.".to_string()),
        "invited" => Some("A new invitation is on its way.".to_string()),
        "last-admin" => Some("The last administrator cannot be deleted.".to_string()),
        _ => None,
    });
    let page = UsersPage {
        layout,
        users: rows,
        page,
        pages,
        prev_page: (page > 1).then(|| page - 1),
        next_page: (u64::from(page) < pages).then(|| page + 1),
    };
    render(&s.visitor, &app, StatusCode::OK, &page)
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

async fn show_new_user(app: Arc<App>, s: Admin) -> Result<Response, Rejection> {
    let page = NewUserPage {
        layout: s.visitor.layout(&app, "New user"),
        username: String::new(),
        email: String::new(),
        role: "user".into(),
        errors: FieldErrors::default(),
    };
    render(&s.visitor, &app, StatusCode::OK, &page)
}

async fn create(app: Arc<App>, s: Admin, form: CheckedForm) -> Result<Response, Rejection> {
    let username = form.field("username").trim().to_string();
    let email = form.field("email").trim().to_string();
    let role_text = form.get("role").unwrap_or("user").to_string();
    let mut errors = FieldErrors::default();
    let role = match role_text.as_str() {
        "admin" => Some(Role::Admin),
        "user" => Some(Role::User),
        _ => None,
    };
    let status = match role {
        None => {
            errors.form = Some("The role must be user or admin.".into());
            StatusCode::BAD_REQUEST
        }
        Some(role) => {
            let (a, u, e) = (app.clone(), username.clone(), email.clone());
            match blocking(move || Ok(services::invite_user(&a, &u, &e, role))).await? {
                Ok(invited) => {
                    return Ok(redirect(if invited.mail_queued {
                        "/admin/users?notice=created"
                    } else {
                        "/admin/users?notice=created-no-mail"
                    }));
                }
                Err(services::ServiceError::Accounts(e)) => match e {
                    accounts::Error::UsernameTaken { .. } => {
                        errors.username = Some("That user name is taken.".into());
                        StatusCode::CONFLICT
                    }
                    accounts::Error::EmailTaken { .. } => {
                        errors.email = Some("That email address is already in use.".into());
                        StatusCode::CONFLICT
                    }
                    accounts::Error::Validation { field, message } => {
                        match field {
                            "username" => errors.username = Some(message),
                            "email" => errors.email = Some(message),
                            _ => errors.form = Some(message),
                        }
                        StatusCode::BAD_REQUEST
                    }
                    e => return Err(AppError::from(e).into()),
                },
                Err(e) => return Err(AppError::from(e).into()),
            }
        }
    };
    let page = NewUserPage {
        layout: s.visitor.layout(&app, "New user"),
        username,
        email,
        role: role_text,
        errors,
    };
    render(&s.visitor, &app, status, &page)
}

async fn delete(app: Arc<App>, id: UserId) -> Result<Response, Rejection> {
    match blocking(move || Ok(services::delete_user(&app, id))).await? {
        Ok(_) => Ok(redirect("/admin/users?notice=deleted")),
        Err(services::ServiceError::Accounts(accounts::Error::LastAdmin)) => {
            Ok(redirect("/admin/users?notice=last-admin"))
        }
        Err(e) => Err(AppError::from(e).into()),
    }
}

async fn resend(app: Arc<App>, id: UserId) -> Result<Response, Rejection> {
    blocking(move || Ok(services::resend_invitation(&app, id)?)).await?;
    Ok(redirect("/admin/users?notice=invited"))
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

async fn show_mail_log(app: Arc<App>, query: Query, s: Admin) -> Result<Response, Rejection> {
    let deliveries = app
        .mailer
        .deliveries()
        .into_iter()
        .map(|d| DeliveryRow {
            when: d
                .updated
                .duration_since(std::time::UNIX_EPOCH)
                .map(|t| format_time(i64::try_from(t.as_secs()).unwrap_or(i64::MAX)))
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
    let mut layout = s.visitor.layout(&app, "Mail delivery log");
    if query.contains_key("sent") {
        layout.notice = Some("Test email queued.".into());
    }
    render(
        &s.visitor,
        &app,
        StatusCode::OK,
        &MailPage { layout, deliveries },
    )
}

async fn mail_test(app: Arc<App>, form: CheckedForm) -> Result<Response, Rejection> {
    app.mailer
        .send_test(form.field("to"))
        .map_err(AppError::from)?;
    Ok(redirect("/admin/mail?sent=1"))
}
