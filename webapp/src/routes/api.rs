//! The REST API of the original application: `POST /api/register` and `POST /api/upload`, with
//! its JSON bodies, plus `GET /api/openapi.json`. Errors are JSON (`crate::error::recover_api`).

use std::collections::HashMap;
use std::sync::Arc;

use warp::http::StatusCode;
use warp::multipart::FormData;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{Route, route};
use crate::app::App;
use crate::client::{ClientAddr, client_addr};
use crate::config::ApiRegistration;
use crate::error::AppError;
use crate::multipart::{drain, input, read_upload, upload_body};
use crate::services;
use crate::web::{blocking, form};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../static/openapi.json");

/// Every route of this area (mounted under `/api`).
pub fn routes(app: &Arc<App>) -> Route {
    route(register(app))
        .or(route(upload(app)))
        .unify()
        .or(route(openapi()))
        .unify()
        .boxed()
}

/// `POST /api/register` (form or multipart: `username`, `password`, optional `email`; in
/// `admin` mode also `admin_username`, `admin_password`).
fn register(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    // Form or multipart, as the original API accepted both.
    let fields = form()
        .or(upload_body(app).and_then(|f| async move {
            read_upload(f, 0)
                .await
                .map(|u| u.fields)
                .map_err(AppError::reject)
        }))
        .unify();
    warp::path!("register")
        .and(warp::post())
        .and(fields)
        .and(client_addr(app.trusted_proxies.clone()))
        .and_then(move |f: HashMap<String, String>, c: ClientAddr| register_user(a.clone(), f, c))
}

/// `POST /api/upload` (multipart `username`, `password`, `file` or `url`).
fn upload(app: &Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("upload")
        .and(warp::post())
        .and(upload_body(app))
        .and(client_addr(app.trusted_proxies.clone()))
        .and_then(move |f: FormData, c: ClientAddr| receive_upload(a.clone(), f, c))
}

/// `GET /api/openapi.json`
fn openapi() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("openapi.json").and(warp::get()).map(|| {
        let mut r = OPENAPI.into_response();
        r.headers_mut().insert(
            warp::http::header::CONTENT_TYPE,
            warp::http::HeaderValue::from_static("application/json"),
        );
        r
    })
}

fn created(payload: serde_json::Value) -> Response {
    let mut body = serde_json::json!({"success": true});
    if !payload.is_null() {
        body["payload"] = payload;
    }
    warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response()
}

fn required<'a>(fields: &'a HashMap<String, String>, name: &str) -> Result<&'a str, AppError> {
    fields
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AppError::BadRequest(format!("missing field {name:?}")))
}

/// Check credentials from the request's fields (throttled like the login form).
async fn authenticate(
    app: &Arc<App>,
    fields: &HashMap<String, String>,
    user_field: &str,
    password_field: &str,
    client: ClientAddr,
) -> Result<accounts::User, AppError> {
    let (u, p) = (
        required(fields, user_field)?.to_string(),
        required(fields, password_field)?.to_string(),
    );
    let a = app.clone();
    blocking(move || Ok(services::authenticate(&a, &u, &p, client)?)).await
}

async fn register_user(
    app: Arc<App>,
    fields: HashMap<String, String>,
    client: ClientAddr,
) -> Result<Response, Rejection> {
    match app.settings.server.api_registration {
        ApiRegistration::Off => {
            return Err(
                AppError::Forbidden("registration through the API is disabled".into()).into(),
            );
        }
        ApiRegistration::Admin => {
            let admin =
                authenticate(&app, &fields, "admin_username", "admin_password", client).await?;
            if !admin.is_admin() {
                return Err(
                    AppError::Forbidden("administrator credentials required".into()).into(),
                );
            }
        }
        ApiRegistration::Open => {}
    }
    let username = required(&fields, "username")?.trim().to_string();
    let password = required(&fields, "password")?.to_string();
    let email = fields
        .get("email")
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty());
    blocking(move || {
        Ok(services::register(
            &app,
            &username,
            &password,
            email.as_deref(),
        )?)
    })
    .await?;
    Ok(created(serde_json::Value::Null))
}

async fn receive_upload(
    app: Arc<App>,
    form: FormData,
    client: ClientAddr,
) -> Result<Response, Rejection> {
    let ticket = match app.pool.admit(&client.to_string()) {
        Ok(t) => t,
        Err(refused) => {
            drain(form).await;
            return Err(AppError::from(refused).into());
        }
    };
    let upload = read_upload(form, app.settings.server.max_upload_bytes).await?;
    let user = authenticate(&app, &upload.fields, "username", "password", client).await?;
    let (entry, detection) = services::detect_and_record(&app, &ticket, user.id, input(upload)?)
        .await
        .map_err(AppError::from)?;
    let mut payload = serde_json::to_value(&detection)
        .map_err(|e| AppError::internal("serialising the detection", e))?;
    payload["id"] = entry.id.as_str().into();
    Ok(created(payload))
}
