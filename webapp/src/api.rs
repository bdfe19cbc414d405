//! The REST API of the original application: `POST /api/register` and `POST /api/upload`, with
//! its JSON bodies, plus `GET /api/openapi.json`.

use std::collections::HashMap;
use std::sync::Arc;

use accounts::{NewUser, Role};
use warp::http::StatusCode;
use warp::multipart::FormData;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::app::App;
use crate::config::ApiRegistration;
use crate::error::AppError;
use crate::uploads::{detect_and_record, drain, input, read_upload};
use crate::web::blocking;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../static/openapi.json");

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

/// Check a user name and password (throttled like the login form) and return the user.
async fn authenticate(
    app: &Arc<App>,
    username: &str,
    password: &str,
    client: String,
) -> Result<accounts::User, AppError> {
    let accounts = app.accounts.clone();
    let (u, p) = (username.to_string(), password.to_string());
    let result = blocking(move || {
        Ok(accounts.login(&u, &p, &client).map(|(user, session)| {
            // The API is stateless: the session the check made ends at once.
            let _ = accounts.logout(&session.id);
            user
        }))
    })
    .await
    .map_err(|_| AppError::Internal("authentication task failed".into()))?;
    result.map_err(|e| match e {
        accounts::Error::Throttled { .. } => {
            AppError::TooManyRequests("too many failed attempts, try again later".into())
        }
        accounts::Error::InvalidCredentials | accounts::Error::Validation { .. } => {
            AppError::Unauthorized("invalid username or password".into())
        }
        other => AppError::Internal(other.to_string()),
    })
}

/// `POST /api/register` (form or multipart: `username`, `password`, optional `email`; in `admin`
/// mode also `admin_username`, `admin_password`).
pub async fn register(
    fields: HashMap<String, String>,
    client: String,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    let result = async {
        match app.settings.api_registration {
            ApiRegistration::Off => {
                return Err(AppError::Forbidden(
                    "registration through the API is disabled".into(),
                ));
            }
            ApiRegistration::Admin => {
                let admin = authenticate(
                    &app,
                    required(&fields, "admin_username")?,
                    required(&fields, "admin_password")?,
                    client,
                )
                .await?;
                if !admin.is_admin() {
                    return Err(AppError::Forbidden(
                        "administrator credentials required".into(),
                    ));
                }
            }
            ApiRegistration::Open => {}
        }
        let username = required(&fields, "username")?.trim().to_string();
        let password = required(&fields, "password")?.to_string();
        // The original API has no email field; a user registered without one gets a unique
        // address under the reserved `.invalid` domain, which no mail is ever sent to.
        let email = fields
            .get("email")
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| format!("{}@users.invalid", username.to_ascii_lowercase()));
        let accounts = app.accounts.clone();
        let new = NewUser {
            username,
            email,
            role: Role::User,
            password: Some(password),
        };
        let r = blocking(move || Ok(accounts.create_user(new)))
            .await
            .map_err(|_| AppError::Internal("registration task failed".into()))?;
        r.map_err(|e| match e {
            accounts::Error::UsernameTaken { .. } => {
                AppError::Conflict("username already taken".into())
            }
            accounts::Error::EmailTaken { .. } => {
                AppError::Conflict("email address already in use".into())
            }
            accounts::Error::Validation { field, message } => {
                AppError::BadRequest(format!("invalid {field}: {message}"))
            }
            other => AppError::Internal(other.to_string()),
        })
    }
    .await;
    match result {
        Ok(_) => Ok(created(serde_json::Value::Null)),
        Err(e) => Err(e.reject()),
    }
}

/// `POST /api/upload` (multipart `username`, `password`, `file` or `url`).
pub async fn upload(form: FormData, client: String, app: Arc<App>) -> Result<Response, Rejection> {
    let ticket = match app.pool.admit(&client) {
        Ok(t) => t,
        Err(refused) => {
            drain(form).await;
            return Err(AppError::from(refused).reject());
        }
    };
    let result = async {
        let upload = read_upload(form, app.settings.max_upload_bytes).await?;
        let user = authenticate(
            &app,
            required(&upload.fields, "username")?,
            required(&upload.fields, "password")?,
            client,
        )
        .await?;
        detect_and_record(&app, &ticket, user.id.0, input(upload)?).await
    }
    .await;
    match result {
        Ok((entry, detection)) => {
            let mut payload = serde_json::to_value(&detection)
                .map_err(|e| AppError::Internal(e.to_string()).reject())?;
            payload["id"] = entry.id.as_str().into();
            Ok(created(payload))
        }
        Err(e) => Err(e.reject()),
    }
}

/// `GET /api/openapi.json`
pub async fn openapi() -> Result<Response, Rejection> {
    let mut r = OPENAPI.into_response();
    r.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
