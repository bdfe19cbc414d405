//! The one error type of the web app, the one mapping from every library's errors to it (the
//! `From` impls below), and the one `recover` that turns every rejection into a status code
//! with an HTML page or, under `/api/`, the JSON body
//! `{"success": false, "error": {"code": <status>, "message": "..."}}`.
//!
//! Internal errors keep their source chain and are logged once, here, with it; the client sees
//! a generic message.

use std::convert::Infallible;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::fetch::FetchError;
use crate::pool::Refused;
use crate::web::{encode_component, redirect};

/// An error from anywhere below the web layer, kept for the log.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong, as the client should see it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed or a field is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 401: wrong or missing credentials (API).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: CSRF failure or not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing, or not yours.
    #[error("not found")]
    NotFound,
    /// 409: conflict (a taken user name).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 408: the client sent its body too slowly.
    #[error("{0}")]
    Timeout(String),
    /// 429: too many attempts.
    #[error("{0}")]
    TooManyRequests(String),
    /// 415: the body is not of a type this route reads.
    #[error("unsupported content type")]
    UnsupportedMediaType,
    /// 503: the detection queue is full.
    #[error("the server is busy: try again in a few seconds")]
    Busy,
    /// 503: storage cannot be written (disk full, read-only, database down); nothing was saved.
    #[error("storage unavailable: nothing was saved; try again later")]
    StorageUnavailable(#[source] Source),
    /// 500: our fault; logged with its source chain, the client gets a generic message.
    #[error("internal error while {context}")]
    Internal {
        /// What was being done.
        context: &'static str,
        /// Why it failed.
        #[source]
        source: Source,
    },
}

impl warp::reject::Reject for AppError {}

/// "Log in first": the HTML recover redirects to the login page (and back to `next` after),
/// the API answers 401.
#[derive(Debug)]
pub struct LoginRequired {
    /// Where to go after logging in (a local path), if anywhere but home.
    pub next: Option<String>,
}

impl warp::reject::Reject for LoginRequired {}

/// The user must choose a new password before anything else: redirect to the change form.
#[derive(Debug)]
pub struct PasswordChangeRequired;

impl warp::reject::Reject for PasswordChangeRequired {}

impl AppError {
    /// A 500 for `source`, failing while doing `context`.
    pub fn internal(context: &'static str, source: impl Into<Source>) -> AppError {
        AppError::Internal {
            context,
            source: source.into(),
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Busy | AppError::StorageUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to the client (never an internal error's details).
    pub fn message(&self) -> String {
        match self {
            AppError::Internal { .. } => "internal error: it has been logged".into(),
            other => other.to_string(),
        }
    }

    /// This error as a rejection.
    pub fn reject(self) -> Rejection {
        warp::reject::custom(self)
    }

    /// Log what the operator must see: internal errors and storage failures, with every source.
    fn log(&self) {
        match self {
            AppError::Internal { .. } => tracing::error!(error = %chain(self), "internal error"),
            AppError::StorageUnavailable(_) => {
                tracing::error!(error = %chain(self), "storage unavailable")
            }
            _ => {}
        }
    }
}

impl From<Refused> for AppError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Busy => AppError::Busy,
            Refused::ClientBusy => AppError::TooManyRequests(
                "too many uploads from your address at once: wait for one to finish".into(),
            ),
        }
    }
}

impl From<accounts::Error> for AppError {
    fn from(e: accounts::Error) -> Self {
        use accounts::Error as E;
        match e {
            E::InvalidCredentials => AppError::Unauthorized("invalid username or password".into()),
            E::Throttled { .. } => {
                AppError::TooManyRequests("too many failed attempts, try again later".into())
            }
            E::UsernameTaken { .. } => AppError::Conflict("username already taken".into()),
            E::EmailTaken { .. } => AppError::Conflict("email address already in use".into()),
            E::Validation { field, message } => {
                AppError::BadRequest(format!("invalid {field}: {message}"))
            }
            E::TokenExpired => AppError::BadRequest("this link has expired".into()),
            E::TokenUsed => AppError::BadRequest("this link has already been used".into()),
            E::TokenInvalid | E::TokenWrongPurpose { .. } => {
                AppError::BadRequest("this link is not valid".into())
            }
            E::SessionInvalid => AppError::Unauthorized("your session has ended".into()),
            E::LastAdmin => AppError::Conflict("the last administrator cannot be removed".into()),
            E::NotFound { .. } => AppError::NotFound,
            E::Storage { .. } => AppError::StorageUnavailable(Box::new(e)),
            other => AppError::internal("using the accounts database", other),
        }
    }
}

impl From<history_store::Error> for AppError {
    fn from(e: history_store::Error) -> Self {
        use history_store::Error as E;
        match e {
            // Someone else's entry and a missing one look the same.
            E::NotFound | E::InvalidEntryId { .. } | E::InvalidKind { .. } => AppError::NotFound,
            E::InvalidCursor { .. } => AppError::BadRequest("invalid page cursor".into()),
            E::ImageTooLarge { .. } => AppError::TooLarge(e.to_string()),
            E::UnsupportedImage { .. } | E::InvalidInput { .. } => {
                AppError::BadRequest(e.to_string())
            }
            E::Io { .. } | E::Database { .. } | E::Postgres(_) | E::ObjectStore { .. } => {
                AppError::StorageUnavailable(Box::new(e))
            }
            other => AppError::internal("using the upload history", other),
        }
    }
}

impl From<mask_detect::Error> for AppError {
    fn from(e: mask_detect::Error) -> Self {
        use mask_detect::Error as E;
        match e {
            E::TooLarge { .. } | E::MemoryLimit(_) => {
                AppError::TooLarge(format!("image has too many pixels: {e}"))
            }
            E::UnsupportedFormat | E::EmptyInput => AppError::BadRequest(
                "not an image: JPEG, PNG, WebP, BMP, GIF or TIFF expected".into(),
            ),
            e if e.is_input_error() => AppError::BadRequest(format!("not a readable image: {e}")),
            e => AppError::internal("detecting faces", e),
        }
    }
}

impl From<mailer::Error> for AppError {
    fn from(e: mailer::Error) -> Self {
        match e {
            mailer::Error::InvalidAddress { .. } => AppError::BadRequest(e.to_string()),
            mailer::Error::QueueFull { .. } => AppError::Busy,
            other => AppError::internal("queueing email", other),
        }
    }
}

impl From<FetchError> for AppError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::TooLarge(_) => AppError::TooLarge(e.to_string()),
            _ => AppError::BadRequest(e.to_string()),
        }
    }
}

/// An error and all its sources, `outer: inner: innermost`, for logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// A JSON error body for the API.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"success": false, "error": {"code": status.as_u16(), "message": message}});
    with_retry_after(warp::reply::with_status(warp::reply::json(&body), status).into_response())
}

/// A minimal HTML error page (no template state needed, so it can render for any request).
pub fn html_error(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head><body><main><h1>{title}</h1><p class=\"error\">{}</p><p><a href=\"/\">Home</a></p></main></body></html>",
        html_escape(message)
    );
    with_retry_after(warp::reply::with_status(warp::reply::html(body), status).into_response())
}

/// A 503 says when to come back.
fn with_retry_after(mut r: Response) -> Response {
    if r.status() == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert("retry-after", warp::http::HeaderValue::from_static("5"));
    }
    r
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Map every rejection to a status and message (logging internal errors once).
pub fn classify(err: &Rejection) -> (StatusCode, String) {
    if let Some(e) = err.find::<AppError>() {
        e.log();
        (e.status(), e.message())
    } else if err.find::<LoginRequired>().is_some() {
        (StatusCode::UNAUTHORIZED, "log in first".to_string())
    } else if err.find::<PasswordChangeRequired>().is_some() {
        (
            StatusCode::FORBIDDEN,
            "choose a new password first".to_string(),
        )
    } else if err.is_not_found() {
        (StatusCode::NOT_FOUND, "not found".to_string())
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large".to_string(),
        )
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length header is required".to_string(),
        )
    } else if let Some(e) = err.find::<warp::filters::body::BodyDeserializeError>() {
        (StatusCode::BAD_REQUEST, format!("malformed form: {e}"))
    } else if err.find::<warp::reject::UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type".to_string(),
        )
    } else if err.find::<warp::reject::InvalidQuery>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid query string".to_string())
    } else if err.find::<warp::reject::MissingHeader>().is_some()
        || err.find::<warp::reject::InvalidHeader>().is_some()
    {
        (
            StatusCode::BAD_REQUEST,
            "missing or invalid header".to_string(),
        )
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        // Checked after the others: when a route with the right method refused the request (a
        // `POST /upload` that is not multipart), the routes for other methods of the same path
        // also left a "method not allowed" in the rejection, and that is not the reason.
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_string(),
        )
    } else {
        tracing::warn!(?err, "unhandled rejection");
        (StatusCode::BAD_REQUEST, "bad request".to_string())
    }
}

/// `recover` for the pages: "log in first" and "change your password first" redirect,
/// everything else is an HTML error page.
pub async fn recover_html(err: Rejection) -> Result<Response, Infallible> {
    if err.find::<AppError>().is_none() {
        if let Some(LoginRequired { next }) = err.find::<LoginRequired>() {
            return Ok(redirect(&match next {
                Some(next) => format!("/login?next={}", encode_component(next)),
                None => "/login".to_string(),
            }));
        }
        if err.find::<PasswordChangeRequired>().is_some() {
            return Ok(redirect("/password/change"));
        }
    }
    let (status, message) = classify(&err);
    Ok(html_error(status, &message))
}

/// `recover` for `/api/`: the JSON error body.
pub async fn recover_api(err: Rejection) -> Result<Response, Infallible> {
    let (status, message) = classify(&err);
    Ok(json_error(status, &message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_keep_their_chain_and_hide_it_from_the_client() {
        let io = std::io::Error::other("disk on fire");
        let e = AppError::internal("writing", io);
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message().contains("disk"));
        assert_eq!(chain(&e), "internal error while writing: disk on fire");
    }

    #[test]
    fn library_errors_map_to_their_statuses() {
        let throttled = accounts::Error::Throttled {
            retry_after: std::time::Duration::from_secs(1),
        };
        assert_eq!(
            AppError::from(throttled).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            AppError::from(accounts::Error::InvalidCredentials).status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            AppError::from(history_store::Error::NotFound).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            AppError::from(mask_detect::Error::UnsupportedFormat).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            AppError::from(Refused::ClientBusy).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            AppError::from(FetchError::InvalidUrl).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
