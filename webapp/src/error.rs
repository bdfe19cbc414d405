//! One error type for handlers, and the one `recover` that turns every rejection into a status
//! code with an HTML page or, under `/api/`, the JSON body
//! `{"success": false, "error": {"code": <status>, "message": "..."}}`.

use std::convert::Infallible;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

/// What went wrong in a handler, as the client should see it.
#[derive(Debug)]
pub enum AppError {
    /// 400: the request is malformed or a field is invalid.
    BadRequest(String),
    /// 401: wrong or missing credentials (API).
    Unauthorized(String),
    /// 403: CSRF failure or not allowed.
    Forbidden(String),
    /// 404: no such thing, or not yours.
    NotFound,
    /// 409: conflict (a taken user name).
    Conflict(String),
    /// 413: the body is over the limit.
    TooLarge(String),
    /// 408: the client sent its body too slowly.
    Timeout(String),
    /// 429: too many attempts.
    TooManyRequests(String),
    /// 415: the body is not of a type this route reads.
    UnsupportedMediaType,
    /// 503: the detection queue is full.
    Busy,
    /// 503: the data directory cannot be written (disk full, read-only); nothing was saved.
    StorageUnavailable,
    /// 500: our fault; the message is logged, the client gets a generic one.
    Internal(String),
}

impl warp::reject::Reject for AppError {}

impl From<crate::pool::Refused> for AppError {
    fn from(r: crate::pool::Refused) -> Self {
        match r {
            crate::pool::Refused::Busy => AppError::Busy,
            crate::pool::Refused::ClientBusy => AppError::TooManyRequests(
                "too many uploads from your address at once: wait for one to finish".into(),
            ),
        }
    }
}

impl AppError {
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
            AppError::Busy | AppError::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to the client.
    pub fn message(&self) -> String {
        match self {
            AppError::BadRequest(m)
            | AppError::Unauthorized(m)
            | AppError::Forbidden(m)
            | AppError::Conflict(m)
            | AppError::TooLarge(m)
            | AppError::Timeout(m)
            | AppError::TooManyRequests(m) => m.clone(),
            AppError::NotFound => "not found".into(),
            AppError::UnsupportedMediaType => "unsupported content type".into(),
            AppError::Busy => "the server is busy: try again in a few seconds".into(),
            AppError::StorageUnavailable => {
                "storage unavailable: the upload was not saved; try again later".into()
            }
            AppError::Internal(_) => "internal error: it has been logged".into(),
        }
    }

    /// This error as a rejection.
    pub fn reject(self) -> Rejection {
        warp::reject::custom(self)
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
    let mut r = warp::reply::with_status(warp::reply::json(&body), status).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert("retry-after", warp::http::HeaderValue::from_static("5"));
    }
    r
}

/// A minimal HTML error page (no template state needed, so it can render for any request).
pub fn html_error(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head><body><main><h1>{title}</h1><p class=\"error\">{}</p><p><a href=\"/\">Home</a></p></main></body></html>",
        html_escape(message)
    );
    let mut r = warp::reply::with_status(warp::reply::html(body), status).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
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

/// Map every rejection to a status and message.
pub fn classify(err: &Rejection) -> (StatusCode, String) {
    if let Some(e) = err.find::<AppError>() {
        if let AppError::Internal(m) = e {
            tracing::error!(error = %m, "internal error");
        }
        (e.status(), e.message())
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

/// `recover` for the pages: an HTML error page.
pub async fn recover_html(err: Rejection) -> Result<Response, Infallible> {
    let (status, message) = classify(&err);
    Ok(html_error(status, &message))
}

/// `recover` for `/api/`: the JSON error body.
pub async fn recover_api(err: Rejection) -> Result<Response, Infallible> {
    let (status, message) = classify(&err);
    Ok(json_error(status, &message))
}
