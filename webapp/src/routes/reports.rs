//! What a user's history adds up to: trends over days (a server-rendered SVG chart with a table)
//! and exports of the entries (CSV or JSON); the privacy page with "delete all my uploads".

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use history_store::{Category, Entry, Source};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{Route, route};
use crate::app::App;
use crate::error::AppError;
use crate::guards::{CheckedForm, SignedIn, csrf_form, signed_in};
use crate::services::{self, Trend};
use crate::web::{Layout, blocking, civil_from_days, days_from_civil, redirect, render};

type Query = HashMap<String, String>;

/// The longest range the trends page shows.
pub const MAX_TREND_DAYS: i64 = 366;

/// Every route of this area.
pub fn routes(app: &Arc<App>) -> Route {
    route(trends_page(app))
        .or(route(export(app)))
        .unify()
        .or(route(privacy_page(app)))
        .unify()
        .or(route(delete_all(app)))
        .unify()
        .boxed()
}

/// `GET /trends?from=YYYY-MM-DD&to=YYYY-MM-DD[&scope=mine]`: uploads per day by category;
/// administrators see every user's unless `scope=mine`.
fn trends_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("trends")
        .and(warp::get())
        .and(warp::query::<Query>())
        .and(signed_in(app.clone()))
        .and_then(move |q: Query, s: SignedIn| show_trends(a.clone(), q, s))
}

/// `GET /history/export?format=csv|json[&tab=CATEGORY]`: the user's entries as a download.
fn export(app: &Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("history" / "export")
        .and(warp::get())
        .and(warp::query::<Query>())
        .and(signed_in(app.clone()))
        .and_then(move |q: Query, s: SignedIn| download(a.clone(), q, s))
}

/// `GET /privacy`: what this deployment keeps, and "delete all my uploads".
fn privacy_page(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("privacy")
        .and(warp::get())
        .and(warp::query::<Query>())
        .and(signed_in(app.clone()))
        .and_then(move |q: Query, s: SignedIn| show_privacy(a.clone(), q, s))
}

/// `POST /history/delete-all` (`confirm=yes`)
fn delete_all(
    app: &Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + use<> {
    let a = app.clone();
    warp::path!("history" / "delete-all")
        .and(warp::post())
        .and(csrf_form(signed_in(app.clone())))
        .and_then(move |s: SignedIn, f: CheckedForm| delete_everything(a.clone(), s, f))
}

fn category_names() -> [(&'static str, &'static str); 4] {
    Category::ALL.map(|c| {
        (
            c.as_str(),
            match c {
                Category::NoFace => "No face",
                Category::AllMasked => "All masked",
                Category::NoneMasked => "None masked",
                Category::SomeMasked => "Some masked",
            },
        )
    })
}

/// One stacked segment of the chart.
struct Bar {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    category: &'static str,
    title: String,
}

struct Tick {
    x: f64,
    label: String,
}

/// The chart's geometry, computed here so the template only places it.
struct Chart {
    width: u32,
    height: u32,
    left: u32,
    top: u32,
    bottom: u32,
    max: u64,
    bars: Vec<Bar>,
    ticks: Vec<Tick>,
}

fn chart(trend: &Trend) -> Chart {
    let (width, height, left, top, bottom) = (720u32, 260u32, 40u32, 10u32, 230u32);
    let max = trend
        .days
        .iter()
        .map(|d| d.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = trend.days.len().max(1) as f64;
    let slot = f64::from(width - left) / n;
    let scale = f64::from(bottom - top) / max as f64;
    let names = category_names();
    let mut bars = Vec::new();
    let mut ticks = Vec::new();
    let tick_every = (trend.days.len() / 8).max(1);
    for (i, counts) in trend.days.iter().enumerate() {
        let x = f64::from(left) + i as f64 * slot + slot * 0.1;
        let day = civil_from_days(trend.first_day + i as i64);
        let mut y = f64::from(bottom);
        for (k, &count) in counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let h = count as f64 * scale;
            y -= h;
            bars.push(Bar {
                x,
                y,
                w: slot * 0.8,
                h,
                category: names[k].0,
                title: format!("{day}: {count} {}", names[k].1.to_lowercase()),
            });
        }
        if i % tick_every == 0 {
            ticks.push(Tick {
                x: x + slot * 0.4,
                label: day[5..].to_string(),
            });
        }
    }
    Chart {
        width,
        height,
        left,
        top,
        bottom,
        max,
        bars,
        ticks,
    }
}

struct TrendRow {
    day: String,
    counts: [u64; 4],
    total: u64,
}

#[derive(Template)]
#[template(path = "trends.html")]
struct TrendsPage {
    layout: Layout,
    from: String,
    to: String,
    is_admin: bool,
    all_users: bool,
    scope_label: &'static str,
    chart: Chart,
    legend: [(&'static str, &'static str); 4],
    rows: Vec<TrendRow>,
    total: u64,
}

fn parse_day(q: &Query, name: &str, default: i64) -> Result<i64, AppError> {
    match q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => days_from_civil(s).ok_or_else(|| {
            AppError::BadRequest(format!("{name} must be a date as YYYY-MM-DD, got {s:?}"))
        }),
    }
}

async fn show_trends(app: Arc<App>, q: Query, s: SignedIn) -> Result<Response, Rejection> {
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as i64);
    let last = parse_day(&q, "to", today)?;
    let first = parse_day(&q, "from", last - 29)?;
    if first > last {
        return Err(AppError::BadRequest("from must not be after to".into()).into());
    }
    if last - first + 1 > MAX_TREND_DAYS {
        return Err(AppError::BadRequest(format!("choose at most {MAX_TREND_DAYS} days")).into());
    }
    let is_admin = s.user.is_admin();
    let all_users = is_admin && q.get("scope").map(String::as_str) != Some("mine");
    let owner = (!all_users).then_some(s.user.id);
    let a = app.clone();
    let trend = blocking(move || Ok(services::trend(&a, owner, first, last)?)).await?;
    let rows: Vec<TrendRow> = trend
        .days
        .iter()
        .enumerate()
        .map(|(i, counts)| TrendRow {
            day: civil_from_days(first + i as i64),
            counts: *counts,
            total: counts.iter().sum(),
        })
        .collect();
    let page = TrendsPage {
        layout: s.visitor.layout(&app, "Trends"),
        from: civil_from_days(first),
        to: civil_from_days(last),
        is_admin,
        all_users,
        scope_label: if all_users {
            "All users"
        } else {
            "Your uploads"
        },
        chart: chart(&trend),
        legend: category_names(),
        total: rows.iter().map(|r| r.total).sum(),
        rows,
    };
    render(&s.visitor, &app, StatusCode::OK, &page)
}

/// A CSV cell: quoted when needed, and never read as a formula by a spreadsheet (file names
/// and URLs come from users).
fn csv_cell(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

fn iso_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (day, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        civil_from_days(day),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn source_url(e: &Entry) -> Option<&str> {
    match &e.source {
        Source::Url(u) => Some(u),
        _ => None,
    }
}

fn export_json(entries: &[Entry]) -> serde_json::Value {
    serde_json::Value::Array(
        entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id.as_str(),
                    "created_at": iso_time(e.created_at_ms),
                    "file_name": e.file_name,
                    "source_url": source_url(e),
                    "category": e.category,
                    "num_faces": e.faces,
                    "num_masked": e.masked,
                    "num_unmasked": e.unmasked,
                    "faces": e.result.get("faces").cloned().unwrap_or_default(),
                })
            })
            .collect(),
    )
}

fn export_csv(entries: &[Entry]) -> String {
    let mut out = String::from(
        "id,created_at,file_name,source_url,category,num_faces,num_masked,num_unmasked,faces\r\n",
    );
    for e in entries {
        let faces = e.result.get("faces").cloned().unwrap_or_default();
        let row = [
            csv_cell(e.id.as_str()),
            iso_time(e.created_at_ms),
            csv_cell(e.file_name.as_deref().unwrap_or("")),
            csv_cell(source_url(e).unwrap_or("")),
            e.category.as_str().to_string(),
            e.faces.to_string(),
            e.masked.to_string(),
            e.unmasked.to_string(),
            csv_cell(&faces.to_string()),
        ];
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

async fn download(app: Arc<App>, q: Query, s: SignedIn) -> Result<Response, Rejection> {
    let format = q.get("format").map(String::as_str).unwrap_or("csv");
    if !matches!(format, "csv" | "json") {
        return Err(
            AppError::BadRequest(format!("format must be csv or json, got {format:?}")).into(),
        );
    }
    let category: Option<Category> = match q.get("tab").map(String::as_str) {
        None | Some("all") => None,
        Some(t) => Some(
            t.parse()
                .map_err(|_| AppError::BadRequest(format!("unknown tab {t:?}")))?,
        ),
    };
    let who = s.user.id;
    let entries = blocking(move || Ok(services::all_entries(&app, who, category)?)).await?;
    let (body, content_type) = if format == "json" {
        (export_json(&entries).to_string(), "application/json")
    } else {
        (export_csv(&entries), "text/csv; charset=utf-8")
    };
    let name = format!(
        "mask-history-{}.{format}",
        category.map(|c| c.as_str()).unwrap_or("all")
    );
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(r)
}

#[derive(Template)]
#[template(path = "privacy.html")]
struct PrivacyPage {
    layout: Layout,
    strip_metadata: bool,
    blur_faces: bool,
    retention_days: Option<u64>,
    count: u64,
}

async fn show_privacy(app: Arc<App>, q: Query, s: SignedIn) -> Result<Response, Rejection> {
    let (a, who) = (app.clone(), history_store::UserId(s.user.id.0));
    let count = blocking(move || Ok(a.history.counts(who)?.total())).await?;
    let h = &app.settings.history;
    let mut layout = s.visitor.layout(&app, "Privacy");
    if let Some(n) = q.get("deleted") {
        layout.notice = Some(format!(
            "Deleted {} uploads.",
            n.parse::<u64>().unwrap_or(0)
        ));
    }
    let page = PrivacyPage {
        layout,
        strip_metadata: h.strip_metadata,
        blur_faces: h.blur_faces,
        retention_days: (h.retention_days > 0).then_some(h.retention_days),
        count,
    };
    render(&s.visitor, &app, StatusCode::OK, &page)
}

async fn delete_everything(
    app: Arc<App>,
    s: SignedIn,
    form: CheckedForm,
) -> Result<Response, Rejection> {
    if form.field("confirm") != "yes" {
        return Err(AppError::BadRequest(
            "tick \"I understand\" to delete all your uploads".into(),
        )
        .into());
    }
    let who = s.user.id;
    let n = blocking(move || Ok(services::delete_all_uploads(&app, who)?)).await?;
    tracing::info!(user = %s.user.username, entries = n, "deleted all uploads");
    Ok(redirect(&format!("/privacy?deleted={n}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        assert_eq!(csv_cell("plain.png"), "plain.png");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_cell("@cmd"), "'@cmd");
        assert_eq!(csv_cell("-2+3,x"), "\"'-2+3,x\"");
    }

    #[test]
    fn times_are_iso_8601_utc() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(86_400_000 + 3_661_000), "1970-01-02T01:01:01Z");
    }

    #[test]
    fn the_chart_stacks_each_day_and_scales_to_the_busiest() {
        let trend = Trend {
            first_day: 0,
            days: vec![[1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 4, 0]],
        };
        let c = chart(&trend);
        assert_eq!(c.max, 4);
        assert_eq!(c.bars.len(), 3);
        // Day 0's two segments stack: the second starts where the first ends.
        assert!((c.bars[0].y - (c.bars[1].y + c.bars[1].h)).abs() < 1e-9);
        // The busiest day fills the plot height.
        assert!((c.bars[2].h - f64::from(c.bottom - c.top)).abs() < 1e-9);
    }
}
