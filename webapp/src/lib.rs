//! The mask detection web application (`mask-web`): a `warp` server composing the detector,
//! `accounts`, `history-store` and `mailer`. Handlers parse, call a library, render.
//!
//! [`routes`] is the whole site as one filter; [`server::serve`] serves it with connection limits
//! (the binary and the tests both use it).

pub mod api;
pub mod app;
pub mod config;
pub mod error;
pub mod fetch;
pub mod pages;
pub mod pool;
pub mod server;
pub mod uploads;
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

pub use app::{App, Startup, StartupError};
pub use config::Settings;

use crate::error::AppError;
use crate::server::client_addr;
use crate::web::{form, visitor, with_app};

type Route = BoxedFilter<(Response,)>;

/// The multipart upload body: refused with 413 from its `Content-Length` alone when too large,
/// and capped while streaming otherwise.
fn upload_body(app: &Arc<App>) -> BoxedFilter<(warp::multipart::FormData,)> {
    let max = app.settings.max_upload_bytes;
    // Room for the other fields and the multipart framing around the file.
    let slack = 256 * 1024;
    warp::header::optional::<u64>("content-length")
        .and_then(move |len: Option<u64>| async move {
            match len {
                Some(n) if n > max + slack => Err(AppError::TooLarge(format!(
                    "image too large: the limit is {} MiB",
                    max / (1024 * 1024)
                ))
                .reject()),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::multipart::form().max_length(max + slack))
        .boxed()
}

fn pages(app: Arc<App>) -> Route {
    let v = || visitor(app.clone());
    let a = || with_app(app.clone());
    let q = || warp::query::<HashMap<String, String>>();
    let get = warp::get;
    let post = warp::post;
    let r1 = warp::path::end()
        .and(get())
        .and(v())
        .and(a())
        .and_then(pages::index)
        .boxed();
    let r2 = warp::path!("login")
        .and(get())
        .and(q())
        .and(v())
        .and(a())
        .and_then(pages::login_form)
        .boxed();
    let r3 = warp::path!("login")
        .and(post())
        .and(form())
        .and(v())
        .and(a())
        .and_then(pages::login)
        .boxed();
    let r4 = warp::path!("logout")
        .and(post())
        .and(form())
        .and(v())
        .and(a())
        .and_then(pages::logout)
        .boxed();
    let r5 = warp::path!("password" / "change")
        .and(get())
        .and(v())
        .and(a())
        .and_then(pages::change_form)
        .boxed();
    let r6 = warp::path!("password" / "change")
        .and(post())
        .and(form())
        .and(v())
        .and(a())
        .and_then(pages::change)
        .boxed();
    let r7 = warp::path!("password" / "forgot")
        .and(get())
        .and(v())
        .and(a())
        .and_then(pages::forgot_form)
        .boxed();
    let r8 = warp::path!("password" / "forgot")
        .and(post())
        .and(form())
        .and(v())
        .and(a())
        .and_then(pages::forgot)
        .boxed();
    let r9 = warp::path!("password" / "reset")
        .and(get())
        .and(q())
        .and(v())
        .and(a())
        .and_then(pages::reset_form)
        .boxed();
    let r10 = warp::path!("password" / "reset")
        .and(post())
        .and(form())
        .and(v())
        .and(a())
        .and_then(pages::reset)
        .boxed();
    let r11 = warp::path!("admin" / "users")
        .and(get())
        .and(q())
        .and(v())
        .and(a())
        .and_then(pages::users)
        .boxed();
    let r12 = warp::path!("admin" / "users" / "new")
        .and(get())
        .and(v())
        .and(a())
        .and_then(pages::new_user_form)
        .boxed();
    let r13 = warp::path!("admin" / "users" / "new")
        .and(post())
        .and(form())
        .and(v())
        .and(a())
        .and_then(pages::create_user)
        .boxed();
    let r14 = warp::path!("admin" / "users" / i64 / "delete")
        .and(post())
        .and(form())
        .and(v())
        .and(a())
        .and_then(pages::delete_user)
        .boxed();
    let r15 = warp::path!("admin" / "users" / i64 / "resend-invite")
        .and(post())
        .and(form())
        .and(v())
        .and(a())
        .and_then(pages::resend_invite)
        .boxed();
    let r16 = warp::path!("admin" / "mail")
        .and(get())
        .and(q())
        .and(v())
        .and(a())
        .and_then(pages::mail_log)
        .boxed();
    let r17 = warp::path!("admin" / "mail" / "test")
        .and(post())
        .and(form())
        .and(v())
        .and(a())
        .and_then(pages::mail_test)
        .boxed();
    let r18 = warp::path!("upload")
        .and(get())
        .and(v())
        .and(a())
        .and_then(uploads::upload_form)
        .boxed();
    let r19 = warp::path!("upload")
        .and(post())
        .and(upload_body(&app))
        .and(v())
        .and(a())
        .and_then(uploads::upload)
        .boxed();
    let r20 = warp::path!("results" / String)
        .and(get())
        .and(v())
        .and(a())
        .and_then(uploads::result)
        .boxed();
    let r21 = warp::path!("history")
        .and(get())
        .and(q())
        .and(v())
        .and(a())
        .and_then(uploads::history)
        .boxed();
    let r22 = warp::path!("history" / String / "delete")
        .and(post())
        .and(form())
        .and(v())
        .and(a())
        .and_then(uploads::delete)
        .boxed();
    let r23 = warp::path!("images" / String / String)
        .and(get())
        .and(v())
        .and(a())
        .and_then(uploads::image)
        .boxed();
    let r24 = warp::path!("healthz")
        .and(get())
        .and(a())
        .and_then(pages::healthz)
        .boxed();
    let statics = warp::path("static")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(get())
        .and_then(|name: String| async move { static_file(&name) })
        .boxed();
    r1.or(r2)
        .unify()
        .or(r3)
        .unify()
        .or(r4)
        .unify()
        .or(r5)
        .unify()
        .or(r6)
        .unify()
        .or(r7)
        .unify()
        .or(r8)
        .unify()
        .or(r9)
        .unify()
        .or(r10)
        .unify()
        .or(r11)
        .unify()
        .or(r12)
        .unify()
        .or(r13)
        .unify()
        .or(r14)
        .unify()
        .or(r15)
        .unify()
        .or(r16)
        .unify()
        .or(r17)
        .unify()
        .or(r18)
        .unify()
        .or(r19)
        .unify()
        .or(r20)
        .unify()
        .or(r21)
        .unify()
        .or(r22)
        .unify()
        .or(r23)
        .unify()
        .or(r24)
        .unify()
        .or(statics)
        .unify()
        .boxed()
}

/// The stylesheet and script, compiled into the binary.
fn static_file(name: &str) -> Result<Response, warp::Rejection> {
    let (body, ty): (&'static str, &'static str) = match name {
        "style.css" => (
            include_str!("../static/style.css"),
            "text/css; charset=utf-8",
        ),
        "upload.js" => (
            include_str!("../static/upload.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return Err(warp::reject::not_found()),
    };
    let mut r = body.into_response();
    r.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static(ty),
    );
    r.headers_mut().insert(
        warp::http::header::CACHE_CONTROL,
        warp::http::HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(r)
}

fn api(app: Arc<App>) -> Route {
    let a = || with_app(app.clone());
    let register_form = warp::path!("register")
        .and(warp::post())
        .and(
            // Form or multipart, as the original API accepted both.
            form()
                .or(upload_body(&app).and_then(|f| async move {
                    uploads::read_upload(f, 0)
                        .await
                        .map(|u| u.fields)
                        .map_err(AppError::reject)
                }))
                .unify(),
        )
        .and(client_addr())
        .and(a())
        .and_then(api::register)
        .boxed();
    let upload = warp::path!("upload")
        .and(warp::post())
        .and(upload_body(&app))
        .and(client_addr())
        .and(a())
        .and_then(api::upload)
        .boxed();
    let openapi = warp::path!("openapi.json")
        .and(warp::get())
        .and_then(api::openapi)
        .boxed();
    register_form.or(upload).unify().or(openapi).unify().boxed()
}

/// The whole site: pages, API (JSON errors), security headers, request logs without secrets.
pub fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let api = warp::path("api")
        .and(api(app.clone()).recover(error::recover_api).unify())
        .boxed();
    let site = api
        .or(pages(app).recover(error::recover_html).unify())
        .unify();
    // Log method, path and status only: query strings carry reset tokens.
    let log = warp::log::custom(|info| {
        tracing::info!(method = %info.method(), path = info.path(), status = info.status().as_u16(),
            elapsed_ms = info.elapsed().as_millis() as u64, "request");
    });
    site.with(warp::reply::with::headers(web::security_headers()))
        .with(log)
        .map(Reply::into_response)
        .boxed()
}
