//! Detection and history: the upload form (file or URL), the result page, the history with its
//! tabs, images, and deleting an entry.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use history_store::{Category, Cursor, Entry, EntryId, Kind, Source, UserId};
use mask_detect::Detection;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{Route, route};
use crate::app::App;
use crate::error::AppError;
use crate::guards::{CheckedForm, CheckedUpload, SignedIn, csrf_form, csrf_upload, signed_in};
use crate::multipart::input;
use crate::services;
use crate::web::{Layout, blocking, format_time, redirect, render};

type Query = HashMap<String, String>;

/// Every route of this area.
pub fn routes(app: &Arc<App>) -> Route {
    route(upload_page(app))
        .or(route(upload(app)))
        .unify()
        .or(route(result_page(app)))
        .unify()
        .or(route(history_page(app)))
        .unify()
        .or(route(delete_entry(app)))
        .unify()
        .or(route(image(app)))
        .unify()
        .boxed()
}

/// `GET /upload`
fn upload_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("upload")
        .and(warp::get())
        .and(signed_in(app.clone()))
        .and_then(move |s: SignedIn| {
            let a = a.clone();
            async move { show_upload(&a, &s, StatusCode::OK, None) }
        })
}

/// `POST /upload` (multipart `csrf_token`, `file` or `url`): detect, store, redirect to the
/// result.
fn upload(app: &Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("upload")
        .and(warp::post())
        .and(csrf_upload(app.clone()))
        .and_then(move |s: SignedIn, u: Result<CheckedUpload, AppError>| {
            receive_upload(a.clone(), s, u)
        })
}

/// `GET /results/{id}`: only for the owner; anyone else gets 404.
fn result_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("results" / String)
        .and(warp::get())
        .and(signed_in(app.clone()))
        .and_then(move |id: String, s: SignedIn| show_result(a.clone(), id, s))
}

/// `GET /history?tab=all|no_face|all_masked|none_masked|some_masked&after=CURSOR`
fn history_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("history")
        .and(warp::get())
        .and(warp::query::<Query>())
        .and(signed_in(app.clone()))
        .and_then(move |q: Query, s: SignedIn| show_history(a.clone(), q, s))
}

/// `POST /history/{id}/delete`
fn delete_entry(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("history" / String / "delete")
        .and(warp::post())
        .and(csrf_form(signed_in(app.clone())))
        .and_then(move |id: String, s: SignedIn, _: CheckedForm| delete(a.clone(), id, s))
}

/// `GET /images/{id}/{original|annotated|thumb}`: only for the owner; anyone else (logged in
/// or not) gets 404.
fn image(app: &Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("images" / String / String)
        .and(warp::get())
        .and(signed_in(app.clone()).or_else(|_| async { Err(AppError::NotFound.reject()) }))
        .and_then(move |id: String, kind: String, s: SignedIn| read_image(a.clone(), id, kind, s))
}

#[derive(Template)]
#[template(path = "upload.html")]
struct UploadPage {
    layout: Layout,
    error: Option<String>,
    max_bytes: u64,
    max_mib: u64,
}

fn show_upload(
    app: &App,
    s: &SignedIn,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, Rejection> {
    let max_bytes = app.settings.server.max_upload_bytes;
    let page = UploadPage {
        layout: s.visitor.layout(app, "Mask detection"),
        error,
        max_bytes,
        max_mib: max_bytes / (1024 * 1024),
    };
    render(&s.visitor, app, status, &page)
}

async fn receive_upload(
    app: Arc<App>,
    s: SignedIn,
    upload: Result<CheckedUpload, AppError>,
) -> Result<Response, Rejection> {
    let result = match upload {
        Ok(u) => match input(u.form) {
            Ok(image) => services::detect_and_record(&app, &u.ticket, s.user.id, image)
                .await
                .map_err(AppError::from),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok((entry, _)) => Ok(redirect(&format!("/results/{}", entry.id.as_str()))),
        Err(e @ (AppError::Internal { .. } | AppError::StorageUnavailable(_))) => Err(e.into()),
        Err(e) => show_upload(&app, &s, e.status(), Some(sentence(&e.message()))),
    }
}

/// A message as a sentence: capital first letter, full stop.
fn sentence(s: &str) -> String {
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

fn owned_entry(app: &App, owner: UserId, id: &str) -> Result<Entry, AppError> {
    let id: EntryId = id.parse().map_err(|_| AppError::NotFound)?;
    Ok(app.history.get(owner, &id)?)
}

fn owner(s: &SignedIn) -> UserId {
    UserId(s.user.id.0)
}

async fn show_result(app: Arc<App>, id: String, s: SignedIn) -> Result<Response, Rejection> {
    let (a, who) = (app.clone(), owner(&s));
    let entry = blocking(move || owned_entry(&a, who, &id)).await?;
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
        layout: s.visitor.layout(&app, "Result"),
        id: entry.id.as_str().to_string(),
        category: entry.category.as_str(),
        message: entry.category.message(),
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
    render(&s.visitor, &app, StatusCode::OK, &page)
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

fn tab_label(c: Category) -> &'static str {
    match c {
        Category::NoFace => "No face",
        Category::AllMasked => "All masked",
        Category::NoneMasked => "None masked",
        Category::SomeMasked => "Some masked",
    }
}

async fn show_history(app: Arc<App>, query: Query, s: SignedIn) -> Result<Response, Rejection> {
    let tab = query.get("tab").cloned().unwrap_or_else(|| "all".into());
    let category: Option<Category> = match tab.as_str() {
        "all" => None,
        t => Some(
            t.parse()
                .map_err(|_| AppError::BadRequest(format!("unknown tab {t:?}")))?,
        ),
    };
    let after: Option<Cursor> = query
        .get("after")
        .map(|a| a.parse())
        .transpose()
        .map_err(AppError::from)?;
    let (a, who) = (app.clone(), owner(&s));
    let (page, counts) = blocking(move || {
        let page = a.history.list(who, category, after.as_ref(), 24)?;
        let counts = a.history.counts(who)?;
        Ok((page, counts))
    })
    .await?;
    let mut tabs = vec![Tab {
        key: "all",
        label: "All",
        count: counts.total(),
        active: category.is_none(),
    }];
    tabs.extend(Category::ALL.into_iter().map(|c| Tab {
        key: c.as_str(),
        label: tab_label(c),
        count: counts.get(c),
        active: category == Some(c),
    }));
    let entries = page
        .entries
        .iter()
        .map(|e| HistoryRow {
            id: e.id.as_str().to_string(),
            name: e.file_name.clone().unwrap_or_else(|| "upload".into()),
            message: e.category.message(),
            when: format_time(e.created_at_ms.div_euclid(1000)),
        })
        .collect();
    let page = HistoryPage {
        layout: s.visitor.layout(&app, "Upload history"),
        tabs,
        tab,
        entries,
        next: page.next.map(|c| c.to_string()),
    };
    render(&s.visitor, &app, StatusCode::OK, &page)
}

async fn read_image(
    app: Arc<App>,
    id: String,
    kind: String,
    s: SignedIn,
) -> Result<Response, Rejection> {
    let kind: Kind = kind.parse().map_err(|_| AppError::NotFound)?;
    let id: EntryId = id.parse().map_err(|_| AppError::NotFound)?;
    let who = owner(&s);
    let data = blocking(move || Ok(app.history.read_image(who, &id, kind)?)).await?;
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

async fn delete(app: Arc<App>, id: String, s: SignedIn) -> Result<Response, Rejection> {
    let id: EntryId = id.parse().map_err(|_| AppError::NotFound)?;
    let who = owner(&s);
    let deleted = blocking(move || Ok(app.history.delete(who, &id)?)).await?;
    if !deleted {
        return Err(AppError::NotFound.into());
    }
    Ok(redirect("/history"))
}
