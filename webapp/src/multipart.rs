//! Multipart upload bodies: a size check from `Content-Length` before anything is read, a cap
//! while streaming, an idle and a total deadline, and draining a refused body so the client
//! sees the answer.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Buf;
use futures_util::StreamExt;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::multipart::FormData;

use crate::app::App;
use crate::error::AppError;
use crate::services::Input;
use crate::web::within;

/// The multipart upload body: refused with 413 from its `Content-Length` alone when too large,
/// and capped while streaming otherwise.
pub fn upload_body(app: &Arc<App>) -> BoxedFilter<(warp::multipart::FormData,)> {
    let max = app.settings.server.max_upload_bytes;
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
/// nothing is kept in memory. `benches/src/bin/load.rs` at concurrency 32 checks that refused
/// uploads get their answer instead of a connection error.
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

/// A batch form: its text fields and its files (client file name and bytes).
#[derive(Default)]
pub struct Batch {
    /// Text fields by name.
    pub fields: HashMap<String, String>,
    /// The files, in the order sent; empty parts are skipped.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Read a batch form: at most `max` file bytes in all, [`MAX_BATCH_FILES`] files (413 beyond),
/// within the upload deadlines.
pub async fn read_batch(form: FormData, max: u64) -> Result<Batch, AppError> {
    within(UPLOAD_TIMEOUT, read_batch_parts(form, max)).await
}

/// Most files one batch form may hold.
pub const MAX_BATCH_FILES: usize = 100;

async fn read_batch_parts(mut form: FormData, max: u64) -> Result<Batch, AppError> {
    let mut fields = HashMap::new();
    let mut files = Vec::new();
    let mut total: u64 = 0;
    while let Some(part) = idle_limited(form.next()).await? {
        let mut part = part.map_err(|e| AppError::BadRequest(format!("malformed form: {e}")))?;
        let name = part.name().to_string();
        let file_name = part.filename().map(str::to_string);
        let mut data = Vec::new();
        while let Some(chunk) = idle_limited(part.data()).await? {
            let chunk = chunk.map_err(|e| AppError::BadRequest(format!("malformed form: {e}")))?;
            total += chunk.remaining() as u64;
            if total > max || (file_name.is_none() && data.len() > 8 * 1024) {
                return Err(AppError::TooLarge(format!(
                    "too large: a batch may send {} MiB at once",
                    max / (1024 * 1024)
                )));
            }
            data.extend_from_slice(chunk.chunk());
        }
        match file_name {
            Some(_) if files.len() >= MAX_BATCH_FILES => {
                return Err(AppError::TooLarge(format!(
                    "too many files: a batch may hold {MAX_BATCH_FILES}"
                )));
            }
            Some(f) if !data.is_empty() => files.push((f, data)),
            Some(_) => {}
            None => {
                let text = String::from_utf8(data)
                    .map_err(|_| AppError::BadRequest(format!("field {name:?} is not UTF-8")))?;
                fields.insert(name, text);
            }
        }
    }
    Ok(Batch { fields, files })
}

/// The image of an upload form: the file, else the URL; neither is a 400 with the form's wording.
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
