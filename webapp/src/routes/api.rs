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
use crate::guards::{Visitor, visitor};
use crate::multipart::{UPLOAD_TIMEOUT, drain, input, read_upload, upload_body};
use crate::services;
use crate::web::{blocking, form, read_capped, within};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../static/openapi.json");

/// Every route of this area (mounted under `/api`).
pub fn routes(app: &Arc<App>) -> Route {
    route(register(app))
        .or(route(upload(app)))
        .unify()
        .or(route(openapi()))
        .unify()
        .or(route(detect(app)))
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

/// `POST /api/detect` (multipart `file` with optional `username`, `password`; or the raw image
/// with an `image/*` content type): the detection JSON, nothing stored. Authenticated by the
/// fields, or by the session cookie together with an `X-Requested-With` header.
fn detect(app: &Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("detect")
        .and(warp::post())
        .and(visitor(app.clone()))
        .and(warp::header::optional::<String>("x-requested-with"))
        .and(detect_body(app))
        .and_then(move |v: Visitor, xrw: Option<String>, body: DetectBody| {
            detect_image(a.clone(), v, xrw, body)
        })
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

/// The body of `POST /api/detect`: a multipart form, or the raw image bytes.
enum DetectBody {
    /// `multipart/form-data`.
    Form(FormData),
    /// An `image/*` body, not read yet.
    Raw(
        std::pin::Pin<
            Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, warp::Error>> + Send>,
        >,
    ),
}

impl DetectBody {
    /// Read and discard the rest of a refused body, as for uploads ([`drain`]).
    async fn drain(self) {
        match self {
            DetectBody::Form(f) => drain(f).await,
            // Discarded as it arrives (nothing kept), for as long as a refused upload is drained.
            DetectBody::Raw(mut body) => {
                use futures_util::StreamExt;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                    while let Some(Ok(_)) = body.next().await {}
                })
                .await;
            }
        }
    }

    /// The text fields (none for a raw body) and the image, capped at `max` bytes.
    async fn read(self, max: u64) -> Result<(HashMap<String, String>, Vec<u8>), AppError> {
        match self {
            DetectBody::Form(f) => {
                let upload = read_upload(f, max).await?;
                let bytes = upload
                    .file
                    .map(|(_, b)| b)
                    .ok_or_else(|| AppError::BadRequest("missing field \"file\"".into()))?;
                Ok((upload.fields, bytes))
            }
            DetectBody::Raw(body) => {
                let bytes = within(UPLOAD_TIMEOUT, read_capped(body, max))
                    .await
                    .map_err(|e| match e {
                        AppError::TooLarge(_) => AppError::TooLarge(format!(
                            "image too large: the limit is {} MiB",
                            max / (1024 * 1024)
                        )),
                        other => other,
                    })?;
                if bytes.is_empty() {
                    return Err(AppError::BadRequest("the body is empty".into()));
                }
                Ok((HashMap::new(), bytes))
            }
        }
    }
}

/// The raw body as a boxed stream of `Bytes`, read later (after pool admission).
fn raw_body<S, B>(body: S) -> DetectBody
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: bytes::Buf,
{
    use futures_util::StreamExt;
    DetectBody::Raw(Box::pin(body.map(|chunk| {
        chunk.map(|mut b| {
            let n = b.remaining();
            b.copy_to_bytes(n)
        })
    })))
}

/// A multipart form (through [`upload_body`]'s limits) or an `image/*` body; anything else 415.
fn detect_body(
    app: &Arc<App>,
) -> impl Filter<Extract = (DetectBody,), Error = Rejection> + Clone + use<> {
    let max = app.settings.server.max_upload_bytes;
    let raw = warp::header::<String>("content-type")
        .and(warp::header::optional::<u64>("content-length"))
        .and_then(move |ct: String, len: Option<u64>| async move {
            if !ct.to_ascii_lowercase().starts_with("image/") {
                return Err(warp::reject::not_found());
            }
            match len {
                Some(n) if n > max => Err(AppError::TooLarge(format!(
                    "image too large: the limit is {} MiB",
                    max / (1024 * 1024)
                ))
                .reject()),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .map(raw_body);
    let multipart = warp::header::<String>("content-type")
        .and_then(|ct: String| async move {
            if ct.to_ascii_lowercase().starts_with("multipart/form-data") {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(upload_body(app))
        .map(DetectBody::Form);
    // Each branch leaves a body of the other's type alone (not found); a 413 from either stands.
    multipart
        .or(raw)
        .unify()
        .or_else(|r: Rejection| async move {
            if r.is_not_found() {
                Err(AppError::UnsupportedMediaType.reject())
            } else {
                Err(r)
            }
        })
}

/// The user behind a `/api/detect` request: from the credential fields when given, else from
/// the session cookie, which counts only with an `X-Requested-With` header. A cross-site form
/// cannot set that header, and a cross-site script that sets it needs a CORS preflight this
/// server never grants, so a session cannot be used from another site.
async fn detect_user(
    app: &Arc<App>,
    v: &Visitor,
    requested_with: Option<&str>,
    fields: &HashMap<String, String>,
) -> Result<accounts::User, AppError> {
    if fields.contains_key("username") || fields.contains_key("password") {
        return authenticate(app, fields, "username", "password", v.client).await;
    }
    match v.session() {
        None => Err(AppError::Unauthorized(
            "log in, or give the username and password fields".into(),
        )),
        Some(_) if requested_with.is_none_or(str::is_empty) => Err(AppError::Forbidden(
            "a request signed in by cookie must carry the X-Requested-With header".into(),
        )),
        Some((user, _)) if user.must_change_password => {
            Err(AppError::Forbidden("choose a new password first".into()))
        }
        Some((user, _)) => Ok(user.clone()),
    }
}

async fn detect_image(
    app: Arc<App>,
    v: Visitor,
    requested_with: Option<String>,
    body: DetectBody,
) -> Result<Response, Rejection> {
    let ticket = match app.pool.admit(&v.client.to_string()) {
        Ok(t) => t,
        Err(refused) => {
            body.drain().await;
            return Err(AppError::from(refused).into());
        }
    };
    let (fields, bytes) = body.read(app.settings.server.max_upload_bytes).await?;
    detect_user(&app, &v, requested_with.as_deref(), &fields).await?;
    let detection = services::detect_only(&app, &ticket, bytes)
        .await
        .map_err(AppError::from)?;
    let body = serde_json::json!({"success": true, "payload": detection});
    Ok(warp::reply::json(&body).into_response())
}
