//! The home page, the static files compiled into the binary, and the health check.

use std::sync::Arc;

use askama::Template;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{Route, route};
use crate::app::App;
use crate::guards::{SignedIn, signed_in};
use crate::services;
use crate::web::{Layout, blocking, render};

/// Every route of this area.
pub fn routes(app: &Arc<App>) -> Route {
    route(home(app))
        .or(route(static_file()))
        .unify()
        .or(route(health(app)))
        .unify()
        .boxed()
}

/// `GET /`
fn home(app: &Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path::end()
        .and(warp::get())
        .and(signed_in(app.clone()))
        .and_then(move |s: SignedIn| {
            let a = a.clone();
            async move {
                let page = IndexPage {
                    layout: s.visitor.layout(&a, "Home"),
                    username: s.user.username.clone(),
                };
                render(&s.visitor, &a, StatusCode::OK, &page)
            }
        })
}

/// `GET /static/{style.css|upload.js}`
fn static_file() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("static" / String)
        .and(warp::get())
        .and_then(|name: String| async move { static_body(&name) })
}

/// `GET /healthz`: 200 when every database answers, 503 naming the first that does not.
fn health(app: &Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("healthz").and(warp::get()).and_then(move || {
        let a = a.clone();
        async move {
            let checked = blocking(move || Ok(services::health(&a))).await?;
            Ok::<_, Rejection>(match checked {
                Ok(()) => warp::reply::with_status("ok\n", StatusCode::OK).into_response(),
                Err(why) => {
                    tracing::error!(error = %why, "health check failed");
                    warp::reply::with_status(
                        "database unavailable\n",
                        StatusCode::SERVICE_UNAVAILABLE,
                    )
                    .into_response()
                }
            })
        }
    })
}

/// The home page.
#[derive(Template)]
#[template(path = "index.html")]
pub(super) struct IndexPage {
    pub(super) layout: Layout,
    pub(super) username: String,
}

/// The stylesheet and script, compiled into the binary.
fn static_body(name: &str) -> Result<Response, Rejection> {
    let (body, ty): (&'static str, &'static str) = match name {
        "style.css" => (
            include_str!("../../static/style.css"),
            "text/css; charset=utf-8",
        ),
        "upload.js" => (
            include_str!("../../static/upload.js"),
            "text/javascript; charset=utf-8",
        ),
        "camera.js" => (
            include_str!("../../static/camera.js"),
            "text/javascript; charset=utf-8",
        ),
        "batch.js" => (
            include_str!("../../static/batch.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return Err(warp::reject::not_found()),
    };
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(r)
}
