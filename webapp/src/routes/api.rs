//! The REST API of the original application: `POST /api/register` and `POST /api/upload`, with
//! its JSON bodies, plus `GET /api/openapi.json`, `POST /api/detect`, and bearer tokens
//! (`POST /api/token`, `DELETE /api/token`) that spare API clients a password check per
//! request. Errors are JSON (`crate::error::recover_api`).

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
        .or(route(issue_token(app)))
        .unify()
        .or(route(revoke_token(app)))
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
        .and(warp::header::optional::<String>("authorization"))
        .and(upload_body(app))
        .and(client_addr(app.trusted_proxies.clone()))
        .and_then(move |auth: Option<String>, f: FormData, c: ClientAddr| {
            receive_upload(a.clone(), auth, f, c)
        })
}

/// `POST /api/token` (form: `username`, `password`): a bearer token, 201.
fn issue_token(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("token")
        .and(warp::post())
        .and(form())
        .and(client_addr(app.trusted_proxies.clone()))
        .and_then(move |f: HashMap<String, String>, c: ClientAddr| {
            let app = a.clone();
            async move {
                let (u, p) = (
                    required(&f, "username")?.to_string(),
                    required(&f, "password")?.to_string(),
                );
                let a2 = app.clone();
                let (_, session) =
                    blocking(move || Ok(services::issue_api_token(&a2, &u, &p, c)?)).await?;
                let idle = app.accounts.config().session_idle_timeout.as_secs();
                Ok::<_, Rejection>(created(serde_json::json!({
                    "token": session.id.as_str(),
                    "token_type": "Bearer",
                    "expires_in": idle,
                })))
            }
        })
}

/// `DELETE /api/token` with `Authorization: Bearer TOKEN`: the token stops working.
fn revoke_token(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("token")
        .and(warp::delete())
        .and(warp::header::optional::<String>("authorization"))
        .and_then(move |auth: Option<String>| {
            let app = a.clone();
            async move {
                let token = bearer(auth.as_deref())?.ok_or_else(|| {
                    AppError::Unauthorized("give the token as Authorization: Bearer TOKEN".into())
                })?;
                let revoked =
                    blocking(move || Ok(services::revoke_api_token(&app, &token)?)).await?;
                if !revoked {
                    return Err(AppError::Unauthorized("no such token".into()).into());
                }
                Ok::<_, Rejection>(
                    warp::reply::json(&serde_json::json!({"success": true})).into_response(),
                )
            }
        })
}

/// The token of an `Authorization: Bearer TOKEN` header; `None` without the header.
fn bearer(header: Option<&str>) -> Result<Option<String>, AppError> {
    let Some(value) = header else {
        return Ok(None);
    };
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_string()))
        }
        _ => Err(AppError::Unauthorized(
            "the Authorization header must be \"Bearer TOKEN\" (a token from POST /api/token)"
                .into(),
        )),
    }
}

/// `POST /api/detect` (multipart `file` with optional `username`, `password`; or the raw image
/// with an `image/*` content type): the detection JSON, nothing stored. Authenticated by a
/// bearer token, by the fields, or by the session cookie together with an `X-Requested-With`
/// header.
fn detect(app: &Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("detect")
        .and(warp::post())
        .and(visitor(app.clone()))
        .and(warp::header::optional::<String>("x-requested-with"))
        .and(warp::header::optional::<String>("authorization"))
        .and(detect_body(app))
        .and_then(
            move |v: Visitor, xrw: Option<String>, auth: Option<String>, body: DetectBody| {
                detect_image(a.clone(), v, xrw, auth, body)
            },
        )
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
    authorization: Option<String>,
    form: FormData,
    client: ClientAddr,
) -> Result<Response, Rejection> {
    let token = bearer(authorization.as_deref())?;
    let ticket = match app.pool.admit(&client.to_string()) {
        Ok(t) => t,
        Err(refused) => {
            drain(form).await;
            return Err(AppError::from(refused).into());
        }
    };
    let upload = read_upload(form, app.settings.server.max_upload_bytes).await?;
    let user = match token {
        Some(token) => {
            let a = app.clone();
            blocking(move || Ok(services::bearer_user(&a, &token)?)).await?
        }
        None => authenticate(&app, &upload.fields, "username", "password", client).await?,
    };
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
    token: Option<String>,
    fields: &HashMap<String, String>,
) -> Result<accounts::User, AppError> {
    if let Some(token) = token {
        let a = app.clone();
        return blocking(move || Ok(services::bearer_user(&a, &token)?)).await;
    }
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
    authorization: Option<String>,
    body: DetectBody,
) -> Result<Response, Rejection> {
    let token = bearer(authorization.as_deref())?;
    let ticket = match app.pool.admit(&v.client.to_string()) {
        Ok(t) => t,
        Err(refused) => {
            body.drain().await;
            return Err(AppError::from(refused).into());
        }
    };
    let (fields, bytes) = body.read(app.settings.server.max_upload_bytes).await?;
    detect_user(&app, &v, requested_with.as_deref(), token, &fields).await?;
    let detection = services::detect_only(&app, &ticket, bytes)
        .await
        .map_err(AppError::from)?;
    let body = serde_json::json!({"success": true, "payload": detection});
    Ok(warp::reply::json(&body).into_response())
}
