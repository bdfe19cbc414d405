//! The live camera page (`static/camera.js` sends frames to `POST /api/detect`) and batch
//! upload: several photos in one form, or zips of photos, each recorded as its own
//! history entry; a summary with counts by category. The page posts one file at a time from
//! `static/batch.js` (progress per file) and works as a plain multi-file form without it.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use history_store::{Category, EntryId, UserId};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{Route, route};
use crate::app::App;
use crate::error::{AppError, json_error};
use crate::guards::{Checked, SignedIn, csrf_multipart, signed_in};
use crate::multipart::Batch;
use crate::services::{self, BatchItem, ZipLimits};
use crate::web::{Layout, blocking, render};

/// Most entries one summary link may list.
const MAX_SUMMARY_IDS: usize = 500;

/// Every route of this area.
pub fn routes(app: &Arc<App>) -> Route {
    route(batch_page(app))
        .or(route(batch_upload(app)))
        .unify()
        .or(route(summary_page(app)))
        .unify()
        .or(route(camera_page(app)))
        .unify()
        .boxed()
}

/// `GET /camera`: the live camera check.
fn camera_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("camera")
        .and(warp::get())
        .and(signed_in(app.clone()))
        .and_then(move |s: SignedIn| {
            let a = a.clone();
            async move {
                let page = CameraPage {
                    layout: s.visitor.layout(&a, "Live camera"),
                };
                render(&s.visitor, &a, StatusCode::OK, &page)
            }
        })
}

#[derive(Template)]
#[template(path = "camera.html")]
struct CameraPage {
    layout: Layout,
}

/// `GET /batch`
fn batch_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("batch")
        .and(warp::get())
        .and(signed_in(app.clone()))
        .and_then(move |s: SignedIn| {
            let a = a.clone();
            async move { show_batch(&a, &s, StatusCode::OK, None) }
        })
}

/// `POST /batch` (multipart `csrf_token` and one or more `files`, photos or zips of photos):
/// the summary page, or with `Accept: application/json` the items as JSON (for `batch.js`).
fn batch_upload(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("batch")
        .and(warp::post())
        .and(warp::header::optional::<String>("accept"))
        .and(csrf_multipart::<Batch>(app.clone()))
        .and_then(
            move |accept: Option<String>, s: SignedIn, b: Result<Checked<Batch>, AppError>| {
                let json = accept.is_some_and(|a| a.contains("application/json"));
                receive_batch(a.clone(), s, json, b)
            },
        )
}

/// `GET /batch/summary?ids=ID,ID,...`: counts by category of these entries (the caller's own;
/// others are left out).
fn summary_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("batch" / "summary")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(signed_in(app.clone()))
        .and_then(move |q: HashMap<String, String>, s: SignedIn| show_summary(a.clone(), q, s))
}

#[derive(Template)]
#[template(path = "batch.html")]
struct BatchPage {
    layout: Layout,
    error: Option<String>,
    max_bytes: u64,
    max_mib: u64,
    limits: ZipLimits,
    limit_mib: u64,
}

fn show_batch(
    app: &App,
    s: &SignedIn,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, Rejection> {
    let max_bytes = app.settings.server.max_upload_bytes;
    let limits = ZipLimits::default();
    let page = BatchPage {
        layout: s.visitor.layout(app, "Batch upload"),
        error,
        max_bytes,
        max_mib: max_bytes / (1024 * 1024),
        limits,
        limit_mib: limits.max_total_bytes / (1024 * 1024),
    };
    render(&s.visitor, app, status, &page)
}

/// One row of the summary.
struct Row {
    name: String,
    id: Option<String>,
    category: &'static str,
    message: String,
}

/// A category and how many photos fell in it.
struct Count {
    key: &'static str,
    label: &'static str,
    count: usize,
}

#[derive(Template)]
#[template(path = "batch_summary.html")]
struct SummaryPage {
    layout: Layout,
    rows: Vec<Row>,
    counts: Vec<Count>,
    recorded: usize,
    failed: usize,
}

fn category_label(c: Category) -> &'static str {
    match c {
        Category::NoFace => "No face",
        Category::AllMasked => "All masked",
        Category::NoneMasked => "None masked",
        Category::SomeMasked => "Some masked",
    }
}

fn summary(app: &App, s: &SignedIn, rows: Vec<Row>) -> Result<Response, Rejection> {
    let counts = Category::ALL
        .into_iter()
        .map(|c| Count {
            key: c.as_str(),
            label: category_label(c),
            count: rows.iter().filter(|r| r.category == c.as_str()).count(),
        })
        .collect();
    let recorded = rows.iter().filter(|r| r.id.is_some()).count();
    let page = SummaryPage {
        layout: s.visitor.layout(app, "Batch summary"),
        failed: rows.len() - recorded,
        recorded,
        rows,
        counts,
    };
    render(&s.visitor, app, StatusCode::OK, &page)
}

fn row(item: &BatchItem) -> Row {
    match &item.outcome {
        Ok((entry, _)) => Row {
            name: item.name.clone(),
            id: Some(entry.id.as_str().to_string()),
            category: entry.category.as_str(),
            message: entry.category.message().to_string(),
        },
        Err(e) => Row {
            name: item.name.clone(),
            id: None,
            category: "error",
            message: e.message(),
        },
    }
}

fn item_json(item: &BatchItem) -> serde_json::Value {
    match &item.outcome {
        Ok((entry, d)) => serde_json::json!({
            "name": item.name, "id": entry.id.as_str(), "category": entry.category.as_str(),
            "message": entry.category.message(), "num_faces": d.num_faces,
            "num_masked": d.num_masked, "num_unmasked": d.num_unmasked,
        }),
        Err(e) => serde_json::json!({"name": item.name, "error": e.message()}),
    }
}

/// Record every photo of an admitted, checked batch form (in [`services::record_batch`]).
async fn run_batch(
    app: &Arc<App>,
    s: &SignedIn,
    batch: Result<Checked<Batch>, AppError>,
) -> Result<Vec<BatchItem>, AppError> {
    let batch = batch?;
    if batch.form.files.is_empty() {
        return Err(AppError::BadRequest(
            "choose one or more photos or zips".into(),
        ));
    }
    Ok(services::record_batch(
        app,
        &batch.ticket,
        s.user.id,
        batch.form.files,
        ZipLimits::default(),
    )
    .await?)
}

async fn receive_batch(
    app: Arc<App>,
    s: SignedIn,
    json: bool,
    batch: Result<Checked<Batch>, AppError>,
) -> Result<Response, Rejection> {
    match (run_batch(&app, &s, batch).await, json) {
        (Ok(items), true) => {
            let items: Vec<_> = items.iter().map(item_json).collect();
            Ok(
                warp::reply::json(&serde_json::json!({"success": true, "items": items}))
                    .into_response(),
            )
        }
        (Ok(items), false) => summary(&app, &s, items.iter().map(row).collect()),
        (Err(e @ (AppError::Internal { .. } | AppError::Forbidden(_))), _) => Err(e.into()),
        (Err(e), true) => Ok(json_error(e.status(), &e.message())),
        (Err(e), false) => show_batch(&app, &s, e.status(), Some(e.message())),
    }
}

async fn show_summary(
    app: Arc<App>,
    query: HashMap<String, String>,
    s: SignedIn,
) -> Result<Response, Rejection> {
    let ids: Vec<EntryId> = query
        .get("ids")
        .map(|ids| ids.split(',').filter_map(|id| id.parse().ok()).collect())
        .unwrap_or_default();
    if ids.len() > MAX_SUMMARY_IDS {
        return Err(AppError::BadRequest(format!(
            "a summary lists at most {MAX_SUMMARY_IDS} entries"
        ))
        .into());
    }
    let (a, who) = (app.clone(), UserId(s.user.id.0));
    let entries = blocking(move || {
        let mut found = Vec::new();
        for id in ids {
            match a.history.get(who, &id) {
                Ok(e) => found.push(e),
                Err(history_store::Error::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(found)
    })
    .await?;
    let rows = entries
        .iter()
        .map(|e| Row {
            name: e.file_name.clone().unwrap_or_else(|| "upload".into()),
            id: Some(e.id.as_str().to_string()),
            category: e.category.as_str(),
            message: e.category.message().to_string(),
        })
        .collect();
    summary(&app, &s, rows)
}
