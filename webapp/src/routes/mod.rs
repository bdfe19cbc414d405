//! Every route, grouped by area. Each area module has a `routes` function combining one named
//! filter per route (documented `/// METHOD /path`), and the handlers behind them.
//!
//! To add a route: write its filter in the area's module (path, method, a guard from
//! [`crate::guards`] for who may call it, the body filter), a handler that takes what the guard
//! produces, and add the filter to the area's `routes`. Work that composes several libraries
//! goes into [`crate::services`]; errors are [`crate::error::AppError`] (library errors convert
//! with `?` or `AppError::from`).

pub mod admin;
pub mod api;
pub mod auth;
pub mod batch;
pub mod detection;
pub mod reports;
pub mod site;

use std::sync::Arc;

use askama::Template;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::app::App;
use crate::error;
use crate::guards::Visitor;
use crate::web::{self, Layout, render};

/// A route (or a group of them) answering with a response.
pub type Route = BoxedFilter<(Response,)>;

fn route<F>(filter: F) -> Route
where
    F: Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static,
{
    filter.boxed()
}

/// The whole site: the API under `/api` (JSON errors), the pages (HTML errors, "log in first"
/// redirects), security headers, request logs without secrets.
pub fn routes(app: Arc<App>) -> Route {
    let api = warp::path("api")
        .and(api::routes(&app).recover(error::recover_api).unify())
        .boxed();
    let pages = auth::routes(&app)
        .or(admin::routes(&app))
        .unify()
        .or(detection::routes(&app))
        .unify()
        .or(batch::routes(&app))
        .unify()
        .or(reports::routes(&app))
        .unify()
        .or(site::routes(&app))
        .unify()
        .recover(error::recover_html)
        .unify();
    // Log method, path and status only: query strings carry reset tokens.
    let log = warp::log::custom(|info| {
        tracing::info!(method = %info.method(), path = info.path(), status = info.status().as_u16(),
            elapsed_ms = info.elapsed().as_millis() as u64, "request");
    });
    api.or(pages)
        .unify()
        .with(warp::reply::with::headers(web::security_headers()))
        .with(log)
        .map(Reply::into_response)
        .boxed()
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    layout: Layout,
    message: String,
    link: Option<(String, String)>,
}

/// A page with a title, a sentence and an optional link.
fn message(
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
