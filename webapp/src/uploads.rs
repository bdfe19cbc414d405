//! Part two of the site: upload by file or URL, the result page, history with its tabs, images,
//! deletion, and the detection API. Detection itself is `detect::run`.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use bytes::Buf;
use futures_util::StreamExt;
use history_store::{Category, Cursor, Entry, EntryId, Kind, NewEntry, Source, UserId};
use mask_detect::Detection;
use warp::http::{HeaderValue, StatusCode, header};
use warp::multipart::FormData;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::app::App;
use crate::error::AppError;
use crate::fetch::{FetchError, fetch};
use crate::pool::Ticket;
use crate::web::{Layout, Visitor, blocking, redirect, render, require_user, within};

/// Text fields of an upload form are small; anything bigger is refused.
const MAX_TEXT_FIELD: usize = 8 * 1024;

/// A parsed multipart upload: text fields and at most one file.
#[derive(Default)]
pub struct Upload {
    /// Text fields by name.
    pub fields: HashMap<String, String>,
    /// The `file` part: the client's file name (data only) and its bytes; empty when none chosen.
    pub file: Option<(Option<String>, Vec<u8>)>,
}

/// Read a multipart body, keeping at most `max_file` bytes of the `file` part; more is 413.
pub async fn read_upload(form: FormData, max_file: u64) -> Result<Upload, AppError> {
    within(UPLOAD_TIMEOUT, read_parts(form, max_file)).await
}

/// An upload body that sends nothing for this long is answered 408: a stalled client does not
/// keep its pool place for the whole [`UPLOAD_TIMEOUT`].
pub const UPLOAD_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The next piece of an upload body (a part or a chunk of one), or 408 when nothing arrives
/// within [`UPLOAD_IDLE_TIMEOUT`].
async fn idle_limited<T>(next: impl std::future::Future<Output = T>) -> Result<T, AppError> {
    tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, next)
        .await
        .map_err(|_| {
            AppError::Timeout(format!(
                "no data for {} s: the upload was abandoned",
                UPLOAD_IDLE_TIMEOUT.as_secs()
            ))
        })
}

/// The whole multipart body of an upload must arrive within this time (64 MiB at ~0.5 MiB/s).
/// The upload holds a detection-pool place while it arrives, so this also bounds how long slow
/// clients can keep others out.
pub const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

async fn read_parts(mut form: FormData, max_file: u64) -> Result<Upload, AppError> {
    let mut upload = Upload::default();
    while let Some(part) = idle_limited(form.next()).await? {
        let mut part = part.map_err(|e| multipart_error(&e))?;
        let name = part.name().to_string();
        let file_name = part.filename().map(str::to_string);
        let mut data = Vec::new();
        let limit = if name == "file" {
            max_file as usize
        } else {
            MAX_TEXT_FIELD
        };
        while let Some(chunk) = idle_limited(part.data()).await? {
            let chunk = chunk.map_err(|e| multipart_error(&e))?;
            if data.len() + chunk.remaining() > limit {
                return Err(if name == "file" {
                    AppError::TooLarge(format!(
                        "image too large: the limit is {} MiB",
                        max_file / (1024 * 1024)
                    ))
                } else {
                    AppError::BadRequest(format!("field {name:?} is too long"))
                });
            }
            data.extend_from_slice(chunk.chunk());
        }
        if name == "file" {
            if !data.is_empty() {
                upload.file = Some((file_name, data));
            }
        } else {
            let text = String::from_utf8(data)
                .map_err(|_| AppError::BadRequest(format!("field {name:?} is not UTF-8")))?;
            upload.fields.insert(name, text);
        }
    }
    Ok(upload)
}

/// How long a refused upload's body is read and discarded at most (see [`drain`]).
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Read and discard the rest of a multipart body before answering a refusal (busy pool): if the
/// server answered and closed while the client was still sending, the client's TCP stack would get
/// a reset and could lose the answer. Bounded by the route's length limit and [`DRAIN_TIMEOUT`];
/// nothing is kept in memory. Measured with `benches/src/bin/load.rs` at concurrency 32: 3154
/// connection errors among 42559 refusals before, none after.
pub async fn drain(mut form: FormData) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(mut part)) = form.next().await {
            while let Some(Ok(_)) = part.data().await {}
        }
    })
    .await;
}

fn multipart_error(e: &warp::Error) -> AppError {
    let text = e.to_string();
    if text.contains("limit") || text.contains("too large") || text.contains("exceed") {
        AppError::TooLarge("request body too large".into())
    } else {
        AppError::BadRequest(format!("malformed multipart body: {text}"))
    }
}

/// Where the image comes from, once the form is read.
pub enum Input {
    /// A file's bytes and its client-side name.
    File(Option<String>, Vec<u8>),
    /// A URL to fetch.
    Url(String),
}

/// Pick the file, else the URL; neither is a 400 with the form's wording.
pub fn input(upload: Upload) -> Result<Input, AppError> {
    let url = upload
        .fields
        .get("url")
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty());
    match (upload.file, url) {
        (Some((name, bytes)), _) => Ok(Input::File(name, bytes)),
        (None, Some(url)) => Ok(Input::Url(url)),
        (None, None) => Err(AppError::BadRequest(
            "choose an image file or give an image URL".into(),
        )),
    }
}

/// Fetch (for a URL), detect, annotate and record for `owner`, on the detection pool.
pub async fn detect_and_record(
    app: &Arc<App>,
    ticket: &Ticket,
    owner: i64,
    input: Input,
) -> Result<(Entry, Detection), AppError> {
    let (bytes, file_name, source) = match input {
        Input::File(name, bytes) => (bytes, name, Source::File),
        Input::Url(url) => {
            let bytes = fetch(&url, &app.fetch_limits).await.map_err(|e| match e {
                FetchError::TooLarge(_) => AppError::TooLarge(e.to_string()),
                _ => AppError::BadRequest(e.to_string()),
            })?;
            let name = url
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            (bytes.to_vec(), name, Source::Url(url))
        }
    };
    let app2 = app.clone();
    app.pool
        .run(ticket, move || {
            detect_blocking(&app2, owner, bytes, file_name, source)
        })
        .await
        .map_err(AppError::Internal)?
}

fn detect_blocking(
    app: &App,
    owner: i64,
    bytes: Vec<u8>,
    file_name: Option<String>,
    source: Source,
) -> Result<(Entry, Detection), AppError> {
    let image = mask_detect::decode_image(&bytes, app.detector.config()).map_err(detect_error)?;
    let detection = app.detector.detect(&image).map_err(detect_error)?;
    let annotated = mask_detect::annotate(&image, &detection);
    let mut jpeg = Vec::new();
    mask_detect::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&annotated)
        .map_err(|e| AppError::Internal(format!("encoding annotated image: {e}")))?;
    let result = serde_json::to_value(&detection).map_err(|e| AppError::Internal(e.to_string()))?;
    let category: Category = detection
        .category
        .as_str()
        .parse()
        .map_err(|e: history_store::Error| AppError::Internal(e.to_string()))?;
    let entry = app
        .history
        .record(NewEntry {
            owner: UserId(owner),
            original: bytes,
            annotated: jpeg,
            result,
            faces: detection.num_faces as u32,
            masked: detection.num_masked as u32,
            unmasked: detection.num_unmasked as u32,
            category,
            source,
            file_name,
        })
        .map_err(|e| match e {
            history_store::Error::ImageTooLarge { .. } => AppError::TooLarge(e.to_string()),
            history_store::Error::UnsupportedImage { .. }
            | history_store::Error::InvalidInput { .. } => AppError::BadRequest(e.to_string()),
            other @ (history_store::Error::Io { .. } | history_store::Error::Database { .. }) => {
                // The operator needs the operating system's reason ("No space left on device").
                tracing::error!(error = %crate::error::chain(&other), "storing the upload failed");
                AppError::StorageUnavailable
            }
            other => AppError::Internal(format!(
                "storing the upload: {}",
                crate::error::chain(&other)
            )),
        })?;
    Ok((entry, detection))
}

fn detect_error(e: mask_detect::Error) -> AppError {
    match e {
        mask_detect::Error::TooLarge { .. } | mask_detect::Error::MemoryLimit(_) => {
            AppError::TooLarge(format!("image has too many pixels: {e}"))
        }
        mask_detect::Error::UnsupportedFormat | mask_detect::Error::EmptyInput => {
            AppError::BadRequest("not an image: JPEG, PNG, WebP, BMP, GIF or TIFF expected".into())
        }
        e if e.is_input_error() => AppError::BadRequest(format!("not a readable image: {e}")),
        e => AppError::Internal(e.to_string()),
    }
}

#[derive(Template)]
#[template(path = "upload.html")]
struct UploadPage {
    layout: Layout,
    error: Option<String>,
    max_bytes: u64,
    max_mib: u64,
}

fn upload_page(
    v: &Visitor,
    app: &App,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, Rejection> {
    let page = UploadPage {
        layout: v.layout(app, "Mask detection"),
        error,
        max_bytes: app.settings.max_upload_bytes,
        max_mib: app.settings.max_upload_bytes / (1024 * 1024),
    };
    render(v, app, status, &page)
}

/// `GET /upload`
pub async fn upload_form(v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    if let Err(r) = require_user(&v, "/upload") {
        return Ok(r);
    }
    upload_page(&v, &app, StatusCode::OK, None)
}

/// `POST /upload` (`csrf_token`, `file` or `url`): detect, store, redirect to the result.
pub async fn upload(form: FormData, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    let (user, _) = match require_user(&v, "/upload") {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let ticket = match app.pool.admit(&v.client) {
        Ok(t) => t,
        Err(refused) => {
            drain(form).await;
            let e = AppError::from(refused);
            return upload_page(&v, &app, e.status(), Some(e.message()));
        }
    };
    let result = async {
        let upload = read_upload(form, app.settings.max_upload_bytes).await?;
        v.check_csrf(upload.fields.get("csrf_token"))
            .map_err(|_| AppError::Forbidden("invalid CSRF token".into()))?;
        detect_and_record(&app, &ticket, user.id.0, input(upload)?).await
    }
    .await;
    match result {
        Ok((entry, _)) => Ok(redirect(&format!("/results/{}", entry.id.as_str()))),
        Err(AppError::Forbidden(m)) => Err(AppError::Forbidden(m).reject()),
        Err(e @ AppError::Internal(_)) => Err(e.reject()),
        Err(e) => upload_page(&v, &app, e.status(), Some(capitalise(&e.message()))),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

struct FaceRow {
    label: &'static str,
    prob: String,
    score: String,
    bbox: String,
    note: &'static str,
}

#[derive(Template)]
#[template(path = "result.html")]
struct ResultPage {
    layout: Layout,
    id: String,
    category: &'static str,
    message: &'static str,
    num_faces: u32,
    num_masked: u32,
    num_unmasked: u32,
    file_name: Option<String>,
    url: Option<String>,
    faces: Vec<FaceRow>,
}

/// Someone else's entry and a missing one look the same: 404. Anything else is ours: 500.
fn not_found_or_internal(e: history_store::Error) -> Rejection {
    match e {
        history_store::Error::NotFound => AppError::NotFound.reject(),
        other => AppError::Internal(crate::error::chain(&other)).reject(),
    }
}

fn owned_entry(app: &App, owner: i64, id: &str) -> Result<Entry, Rejection> {
    let id: EntryId = id.parse().map_err(|_| AppError::NotFound.reject())?;
    app.history
        .get(UserId(owner), &id)
        .map_err(not_found_or_internal)
}

fn category_message(c: Category) -> &'static str {
    match c.as_str().parse::<mask_detect::Category>() {
        Ok(c) => c.message(),
        Err(_) => "",
    }
}

/// `GET /results/{id}`: only for the owner; anyone else gets 404.
pub async fn result(id: String, v: Visitor, app: Arc<App>) -> Result<Response, Rejection> {
    let (user, _) = match require_user(&v, &format!("/results/{id}")) {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let app2 = app.clone();
    let entry = blocking(move || owned_entry(&app2, user.id.0, &id)).await?;
    let detection: Option<Detection> = serde_json::from_value(entry.result.clone()).ok();
    let faces = detection
        .map(|d| {
            d.faces
                .iter()
                .map(|f| FaceRow {
                    label: f.label.as_str(),
                    prob: format!("{:.1}%", f.mask_probability * 100.0),
                    score: format!("{:.2}", f.score),
                    bbox: format!(
                        "{:.0}, {:.0}, {:.0}, {:.0}",
                        f.bbox[0], f.bbox[1], f.bbox[2], f.bbox[3]
                    ),
                    note: match f.uncertain_reason {
                        Some(mask_detect::UncertainReason::SmallFace) => "small face: uncertain",
                        Some(mask_detect::UncertainReason::NearThreshold) => {
                            "close call: uncertain"
                        }
                        _ => "",
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let page = ResultPage {
        layout: v.layout(&app, "Result"),
        id: entry.id.as_str().to_string(),
        category: entry.category.as_str(),
        message: category_message(entry.category),
        num_faces: entry.faces,
        num_masked: entry.masked,
        num_unmasked: entry.unmasked,
        file_name: entry.file_name.clone(),
        url: match &entry.source {
            Source::Url(u) => Some(u.clone()),
            _ => None,
        },
        faces,
    };
    render(&v, &app, StatusCode::OK, &page)
}

struct Tab {
    key: &'static str,
    label: &'static str,
    count: u64,
    active: bool,
}

struct HistoryRow {
    id: String,
    name: String,
    message: &'static str,
    when: String,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    layout: Layout,
    tabs: Vec<Tab>,
    tab: String,
    entries: Vec<HistoryRow>,
    next: Option<String>,
}

/// `GET /history?tab=all|no_face|all_masked|none_masked|some_masked&after=CURSOR`
pub async fn history(
    query: HashMap<String, String>,
    v: Visitor,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    let (user, _) = match require_user(&v, "/history") {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    let tab = query.get("tab").cloned().unwrap_or_else(|| "all".into());
    let category: Option<Category> = match tab.as_str() {
        "all" => None,
        t => Some(
            t.parse()
                .map_err(|_| AppError::BadRequest(format!("unknown tab {t:?}")).reject())?,
        ),
    };
    let after: Option<Cursor> = match query.get("after") {
        Some(a) => Some(
            a.parse()
                .map_err(|_| AppError::BadRequest("invalid page cursor".into()).reject())?,
        ),
        None => None,
    };
    let app2 = app.clone();
    let owner = UserId(user.id.0);
    let (page, counts) = blocking(move || {
        let page = app2
            .history
            .list(owner, category, after.as_ref(), 24)
            .map_err(|e| AppError::Internal(e.to_string()).reject())?;
        let counts = app2
            .history
            .counts(owner)
            .map_err(|e| AppError::Internal(e.to_string()).reject())?;
        Ok((page, counts))
    })
    .await?;
    let mut tabs = vec![Tab {
        key: "all",
        label: "All",
        count: counts.total(),
        active: category.is_none(),
    }];
    for (c, label) in [
        (Category::NoFace, "No face"),
        (Category::AllMasked, "All masked"),
        (Category::NoneMasked, "None masked"),
        (Category::SomeMasked, "Some masked"),
    ] {
        tabs.push(Tab {
            key: c.as_str(),
            label,
            count: counts.get(c),
            active: category == Some(c),
        });
    }
    let entries = page
        .entries
        .iter()
        .map(|e| HistoryRow {
            id: e.id.as_str().to_string(),
            name: e.file_name.clone().unwrap_or_else(|| "upload".into()),
            message: category_message(e.category),
            when: crate::pages::format_time(e.created_at_ms.div_euclid(1000)),
        })
        .collect();
    let page = HistoryPage {
        layout: v.layout(&app, "Upload history"),
        tabs,
        tab,
        entries,
        next: page.next.map(|c| c.to_string()),
    };
    render(&v, &app, StatusCode::OK, &page)
}

/// `GET /images/{id}/{original|annotated|thumb}`: only for the owner; anyone else gets 404.
pub async fn image(
    id: String,
    kind: String,
    v: Visitor,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    let Some((user, _)) = &v.user else {
        return Err(AppError::NotFound.reject());
    };
    let kind: Kind = kind.parse().map_err(|_| AppError::NotFound.reject())?;
    let id: EntryId = id.parse().map_err(|_| AppError::NotFound.reject())?;
    let app2 = app.clone();
    let owner = UserId(user.id.0);
    let data = blocking(move || {
        app2.history
            .read_image(owner, &id, kind)
            .map_err(not_found_or_internal)
    })
    .await?;
    let mut r = data.bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(data.image_type.content_type()),
    );
    // Entries never change; the URL is private to the owner.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    Ok(r)
}

/// `POST /history/{id}/delete`
pub async fn delete(
    id: String,
    form: HashMap<String, String>,
    v: Visitor,
    app: Arc<App>,
) -> Result<Response, Rejection> {
    let (user, _) = match require_user(&v, "/history") {
        Ok(u) => u,
        Err(r) => return Ok(r),
    };
    v.check_csrf(form.get("csrf_token"))?;
    let id: EntryId = id.parse().map_err(|_| AppError::NotFound.reject())?;
    let app2 = app.clone();
    let deleted = blocking(move || {
        app2.history
            .delete(UserId(user.id.0), &id)
            .map_err(|e| AppError::Internal(e.to_string()).reject())
    })
    .await?;
    if !deleted {
        return Err(AppError::NotFound.reject());
    }
    Ok(redirect("/history"))
}
