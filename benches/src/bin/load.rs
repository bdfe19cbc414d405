//! Load test of the web app: starts its own `mask-web` on 127.0.0.1, drives `POST /api/upload`
//! with real photos at increasing concurrency plus page traffic (login, history), and prints per
//! level requests/s, latency percentiles, status counts and the server's peak RSS. Afterwards it
//! checks that every upload answered 201 is in the uploader's history with both images readable.
//!
//! ```text
//! load [--levels 1,2,4,8,32] [--seconds 20] [--photos 12] [--max-rss-mib 1024] [--json FILE]
//!      [--auth password|token] [--pages on|off] [--warm-up] [--url URL --pids PID,PID --user NAME --busy-bound-ms N]
//! ```
//!
//! `--warm-up` first uploads each photo once, untimed, so the levels measure a server that has
//! its detection plans for every photo shape (as `stage_times`, its detector-alone peer, does).
//! `--pages off` leaves out the page traffic (each visit logs in through the form, an argon2
//! check), to measure the upload path alone.
//!
//! Uploads authenticate with the username and password fields (the original API), or with
//! `--auth token` by a bearer token from `POST /api/token`, as an API client that sends many
//! photos should.
//!
//! With `--url` it starts no server and drives the one at URL (for example nginx in front of
//! several instances, `make cluster-test`); the RSS columns then sum the processes `--pids`
//! names (a process that has exited counts 0), and `--user` names the API user it registers.
//!
//! Build the server first (`make load` does: `make build`, `cargo build --workspace --all-targets`);
//! it runs the `mask-web` beside its own executable, or `MASK_WEB_BIN`. Only loopback is contacted. The exit status is non-zero
//! when a promise is broken: a request timed out or failed at the connection, a 5xx other than
//! 503 came back, a 503 took longer than a second, the server's peak RSS went over the bound, or
//! a 201 upload is not fully readable afterwards.

// A benchmark frontend: setup failures stop it at once, loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The API user the run registers and uploads as (`--user`, default `loaduser`).
static USER_NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn user() -> &'static str {
    USER_NAME.get().map_or("loaduser", String::as_str)
}

/// With `--auth token`: the bearer token from `POST /api/token` that every upload carries
/// instead of the username and password fields.
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
const PASSWORD: &str = "load-test-password-1";
const ADMIN_PASSWORD: &str = "load-test-admin-password-1";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A 503 must come back at least this fast: refusing is cheap (`--busy-bound-ms` changes it:
/// behind a proxy, a request cut off by a killed instance is answered 503 only then).
const BUSY_BOUND: Duration = Duration::from_secs(1);

struct Args {
    levels: Vec<usize>,
    seconds: u64,
    photos: usize,
    max_rss_mib: u64,
    json: Option<PathBuf>,
    url: Option<String>,
    pids: Vec<u32>,
    busy_bound_ms: f64,
    token_auth: bool,
    pages: bool,
    warm_up: bool,
}

/// What the run drives: a server it started, or one at a given URL.
struct Target {
    url: String,
    /// The processes whose memory is sampled.
    pids: Vec<u32>,
}

impl Target {
    fn status_kib(&self, key: &str) -> u64 {
        self.pids.iter().map(|&pid| proc_status_kib(pid, key)).sum()
    }
}

/// One answered (or failed) request.
#[derive(Clone)]
struct Sample {
    /// HTTP status, or `None` for a timeout or connection error.
    status: Option<u16>,
    ms: f64,
}

#[derive(Default)]
struct Level {
    uploads: Vec<Sample>,
    pages: Vec<Sample>,
    ids: Vec<String>,
    errors: Vec<String>,
}

fn main() {
    let args = parse_args();
    let root = benches::workspace_root();
    let photos = pick_photos(args.photos);
    let work = root
        .join("target")
        .join(format!("load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let (server, target) = match &args.url {
        Some(url) => (
            None,
            Target {
                url: url.trim_end_matches('/').to_string(),
                pids: args.pids.clone(),
            },
        ),
        None => {
            let server = Server::start(&root, &work);
            let target = Target {
                url: server.url.clone(),
                pids: vec![server.child.id()],
            };
            (Some(server), target)
        }
    };
    println!(
        "mask-web pid {:?} at {}, data in {}; {} photos, {} s per level",
        target.pids,
        target.url,
        work.display(),
        photos.len(),
        args.seconds
    );

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let report = rt.block_on(run(&args, &target, photos));
    let peak_kib = target.status_kib("VmHWM");
    drop(rt);
    if let Some(server) = server {
        server.stop();
    }

    let ok = report["ok"].as_bool() == Some(true) && peak_kib / 1024 <= args.max_rss_mib;
    println!(
        "server peak RSS over the whole run (VmHWM): {} MiB (bound {} MiB)",
        peak_kib / 1024,
        args.max_rss_mib
    );
    let mut report = report;
    report["server_vmhwm_mib"] = json!(peak_kib / 1024);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report).expect("json"))
            .expect("write json");
    }
    if ok {
        let _ = std::fs::remove_dir_all(&work);
        println!("load: all promises held");
    } else {
        println!("load: FAILED (server data kept in {})", work.display());
        std::process::exit(1);
    }
}

async fn run(args: &Args, server: &Target, photos: Vec<(String, Vec<u8>)>) -> Value {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("http client");
    register(&client, &server.url).await;
    if args.token_auth {
        let (status, body) = send_text(
            client
                .post(format!("{}/api/token", server.url))
                .form(&[("username", user()), ("password", PASSWORD)]),
        )
        .await
        .expect("token request");
        assert_eq!(status, 201, "token: {body}");
        let token = serde_json::from_str::<Value>(&body).expect("token JSON")["payload"]["token"]
            .as_str()
            .expect("token in the payload")
            .to_string();
        let _ = TOKEN.set(token);
    }
    let photos = Arc::new(photos);
    let mut levels = Vec::new();
    let mut all_ids = Vec::new();
    let mut ok = true;
    if args.warm_up {
        // One upload of each photo, one at a time and not timed: the server optimises a plan
        // per photo shape on first sight, which a long-running server has long done.
        for (name, bytes) in photos.iter() {
            let (sample, id, error) = upload(&client, &server.url, name, bytes).await;
            if sample.status != Some(201) {
                println!(
                    "warm-up upload of {name} failed: {}",
                    error.unwrap_or_default()
                );
                ok = false;
            }
            all_ids.extend(id);
        }
        println!("warm-up: {} photos uploaded once each", photos.len());
    }
    println!(
        "\n{:>5} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}  {:<22} {:>10} {:>9}",
        "conc",
        "uploads",
        "201/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "201 p95",
        "503 p99",
        "statuses",
        "pages p95",
        "peak MiB"
    );
    for &concurrency in &args.levels {
        let level = Arc::new(Mutex::new(Level::default()));
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let peak = Arc::new(AtomicU64::new(0));
        let sampler = {
            let peak = peak.clone();
            let pids = server.pids.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let rss = pids.iter().map(|&pid| proc_status_kib(pid, "VmRSS")).sum();
                    peak.fetch_max(rss, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let mut tasks = Vec::new();
        for worker in 0..concurrency {
            let (client, url, photos, level) = (
                client.clone(),
                server.url.clone(),
                photos.clone(),
                level.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = worker;
                while Instant::now() < deadline {
                    let (name, bytes) = &photos[i % photos.len()];
                    i += concurrency;
                    let (sample, id, error) = upload(&client, &url, name, bytes).await;
                    let mut l = level.lock().unwrap();
                    l.uploads.push(sample);
                    l.ids.extend(id);
                    l.errors.extend(error);
                }
            }));
        }
        let pages = {
            let (url, level, on) = (server.url.clone(), level.clone(), args.pages);
            tokio::spawn(async move {
                while on && Instant::now() < deadline {
                    for (sample, error) in page_visit(&url).await {
                        let mut l = level.lock().unwrap();
                        l.pages.push(sample);
                        l.errors.extend(error);
                    }
                }
            })
        };
        for t in tasks {
            t.await.expect("upload task");
        }
        pages.await.expect("page task");
        sampler.await.expect("rss sampler");
        let level = std::mem::take(&mut *level.lock().unwrap());
        let peak_mib = peak.load(Ordering::Relaxed) / 1024;
        let summary = summarise(
            concurrency,
            args.seconds,
            &level,
            peak_mib,
            args.busy_bound_ms,
        );
        ok &= summary["ok"].as_bool() == Some(true) && peak_mib <= args.max_rss_mib;
        for e in level.errors.iter().take(5) {
            println!("      ! {e}");
        }
        all_ids.extend(level.ids);
        levels.push(summary);
    }
    println!(
        "\nchecking the {} uploads answered 201 in the uploader's history",
        all_ids.len()
    );
    let verified = verify(&server.url, &all_ids, args.url.is_some()).await;
    let missing = verified.as_ref().err().cloned();
    match &missing {
        None => println!(
            "all {} present, original and annotated image readable",
            all_ids.len()
        ),
        Some(e) => println!("NOT all present: {e}"),
    }
    ok &= missing.is_none();
    json!({"levels": levels, "uploads_201": all_ids.len(), "history_check": missing.unwrap_or_else(|| "ok".into()), "ok": ok})
}

/// Print one level's row and return it as JSON with an `ok` verdict.
fn summarise(
    concurrency: usize,
    seconds: u64,
    level: &Level,
    peak_mib: u64,
    busy_bound_ms: f64,
) -> Value {
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for s in &level.uploads {
        let key = s.status.map_or("error".into(), |c| c.to_string());
        *statuses.entry(key).or_default() += 1;
    }
    let all: Vec<f64> = level.uploads.iter().map(|s| s.ms).collect();
    let busy: Vec<f64> = level
        .uploads
        .iter()
        .filter(|s| s.status == Some(503))
        .map(|s| s.ms)
        .collect();
    let ok_ms: Vec<f64> = level
        .uploads
        .iter()
        .filter(|s| s.status == Some(201))
        .map(|s| s.ms)
        .collect();
    let pages: Vec<f64> = level.pages.iter().map(|s| s.ms).collect();
    let created = statuses.get("201").copied().unwrap_or(0);
    let rate = created as f64 / seconds as f64;
    let (p50, p95, p99) = (pct(&all, 50.0), pct(&all, 95.0), pct(&all, 99.0));
    let busy_p99 = pct(&busy, 99.0);
    let bad = level
        .uploads
        .iter()
        .chain(&level.pages)
        .filter(|s| s.status.is_none_or(|c| c >= 500 && c != 503))
        .count();
    let ok = bad == 0 && busy_p99 <= busy_bound_ms;
    let status_text = statuses
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "{concurrency:>5} {:>7} {rate:>8.2} {p50:>8.0} {p95:>8.0} {p99:>8.0} {:>9.0} {:>9} {status_text:<22} {:>10.0} {peak_mib:>9}{}",
        level.uploads.len(),
        pct(&ok_ms, 95.0),
        if busy.is_empty() {
            "-".to_string()
        } else {
            format!("{busy_p99:.0}")
        },
        pct(&pages, 95.0),
        if ok { "" } else { "  <- FAILED" }
    );
    json!({
        "concurrency": concurrency, "seconds": seconds, "uploads": level.uploads.len(),
        "created_per_s": rate, "created_p95_ms": pct(&ok_ms, 95.0), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
        "busy_503_p99_ms": if busy.is_empty() { Value::Null } else { json!(busy_p99) },
        "statuses": statuses, "page_requests": pages.len(), "page_p95_ms": pct(&pages, 95.0),
        "peak_rss_mib": peak_mib, "bad_responses": bad, "ok": ok,
    })
}

/// One `POST /api/upload`; returns the sample, the new entry's id on 201, and an error note.
async fn upload(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    bytes: &[u8],
) -> (Sample, Option<String>, Option<String>) {
    let part = reqwest::multipart::Part::bytes(bytes.to_vec())
        .file_name(name.to_string())
        .mime_str("image/png")
        .expect("mime");
    let form = reqwest::multipart::Form::new();
    let mut request = client.post(format!("{url}/api/upload"));
    let form = match TOKEN.get() {
        Some(token) => {
            request = request.bearer_auth(token);
            form
        }
        None => form.text("username", user()).text("password", PASSWORD),
    }
    .part("file", part);
    let t = Instant::now();
    let response = request.multipart(form).send().await;
    let result = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            r.text().await.map(|body| (status, body))
        }
        Err(e) => Err(e),
    };
    let ms = t.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok((status, body)) => {
            let id = (status == 201)
                .then(|| serde_json::from_str::<Value>(&body).ok())
                .flatten()
                .and_then(|v| v["payload"]["id"].as_str().map(String::from));
            let error = match (status, &id) {
                (201, None) => Some(format!("201 without an id: {body:.200}")),
                (201 | 503, _) => None,
                _ => Some(format!("upload {name}: {status} {body:.200}")),
            };
            let sample = Sample {
                status: Some(status),
                ms,
            };
            (sample, id, error)
        }
        Err(e) => (
            Sample { status: None, ms },
            None,
            Some(format!("upload {name}: {e}")),
        ),
    }
}

/// A human visit: log-in form, log in, two history tabs, log out. Each request is one sample.
async fn page_visit(url: &str) -> Vec<(Sample, Option<String>)> {
    let client = session_client();
    let mut out = Vec::new();
    let mut step = |r: Result<(u16, String), reqwest::Error>, ms: f64, what: &str| {
        let (sample, error) = match r {
            Ok((status, body)) => (
                Sample {
                    status: Some(status),
                    ms,
                },
                (status >= 400).then(|| format!("{what}: {status} {body:.200}")),
            ),
            Err(e) => (Sample { status: None, ms }, Some(format!("{what}: {e}"))),
        };
        let failed = error.is_some();
        out.push((sample, error));
        !failed
    };
    let t = Instant::now();
    let r = get_text(&client, &format!("{url}/login")).await;
    let csrf = r.as_ref().ok().and_then(|(_, body)| hidden_csrf(body));
    if !step(r, ms_since(t), "GET /login") {
        return out;
    }
    let Some(csrf) = csrf else {
        step(
            Ok((599, "no csrf_token in the login form".into())),
            0.0,
            "GET /login",
        );
        return out;
    };
    let t = Instant::now();
    let r = send_text(client.post(format!("{url}/login")).form(&[
        ("username", user()),
        ("password", PASSWORD),
        ("csrf_token", csrf.as_str()),
        ("next", "/history"),
    ]))
    .await;
    if !step(r, ms_since(t), "POST /login") {
        return out;
    }
    for path in ["/history", "/history?tab=all_masked"] {
        let t = Instant::now();
        let r = get_text(&client, &format!("{url}{path}")).await;
        if !step(r, ms_since(t), path) {
            return out;
        }
    }
    // Logging out needs the session's CSRF token, which the history page carries.
    let t = Instant::now();
    let r = get_text(&client, &format!("{url}/upload")).await;
    let csrf = r.as_ref().ok().and_then(|(_, body)| hidden_csrf(body));
    if step(r, ms_since(t), "GET /upload")
        && let Some(csrf) = csrf
    {
        let t = Instant::now();
        let r = send_text(
            client
                .post(format!("{url}/logout"))
                .form(&[("csrf_token", csrf.as_str())]),
        )
        .await;
        step(r, ms_since(t), "POST /logout");
    }
    out
}

/// Log in as the uploader and read every entry's result page and both images.
/// `extra_allowed`: more entries than 201 answers is not an error (behind a proxy whose
/// instance was killed, an upload can commit and lose its answer; the client saw 503).
async fn verify(url: &str, ids: &[String], extra_allowed: bool) -> Result<(), String> {
    let client = session_client();
    let (_, body) = get_text(&client, &format!("{url}/login"))
        .await
        .map_err(|e| e.to_string())?;
    let csrf = hidden_csrf(&body).ok_or("no csrf_token in the login form")?;
    let (status, _) = send_text(client.post(format!("{url}/login")).form(&[
        ("username", user()),
        ("password", PASSWORD),
        ("csrf_token", csrf.as_str()),
        ("next", "/history"),
    ]))
    .await
    .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("login for the check answered {status}"));
    }
    let (_, history) = get_text(&client, &format!("{url}/history"))
        .await
        .map_err(|e| e.to_string())?;
    let count = history
        .split("id=\"tab-all\"")
        .nth(1)
        .and_then(|rest| rest.split('(').nth(1))
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or("no entry count on the history page")?;
    if count > ids.len() && extra_allowed {
        println!(
            "history holds {} entries more than the 201 answers (committed, answer lost)",
            count - ids.len()
        );
    } else if count != ids.len() {
        return Err(format!(
            "history counts {count} entries, {} uploads got 201",
            ids.len()
        ));
    }
    for id in ids {
        for path in [
            format!("/results/{id}"),
            format!("/images/{id}/original"),
            format!("/images/{id}/annotated"),
        ] {
            let r = client
                .get(format!("{url}{path}"))
                .send()
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            let status = r.status().as_u16();
            let kind = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let len = r.bytes().await.map_err(|e| format!("{path}: {e}"))?.len();
            let image = path.starts_with("/images");
            if status != 200 || len == 0 || (image && !kind.starts_with("image/")) {
                return Err(format!("{path}: {status}, {len} bytes of {kind:?}"));
            }
        }
    }
    Ok(())
}

async fn register(client: &reqwest::Client, url: &str) {
    let (status, body) = send_text(
        client
            .post(format!("{url}/api/register"))
            .form(&[("username", user()), ("password", PASSWORD)]),
    )
    .await
    .expect("register request");
    assert_eq!(status, 201, "register: {body}");
}

fn session_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .cookie_store(true)
        .build()
        .expect("http client")
}

async fn get_text(client: &reqwest::Client, url: &str) -> Result<(u16, String), reqwest::Error> {
    send_text(client.get(url)).await
}

async fn send_text(request: reqwest::RequestBuilder) -> Result<(u16, String), reqwest::Error> {
    let r = request.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.text().await?))
}

fn hidden_csrf(html: &str) -> Option<String> {
    let rest = html.split("name=\"csrf_token\" value=\"").nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The `p`th percentile (nearest rank) of `values`, 0 when empty.
fn pct(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `n` photos spread evenly over the test photos (sorted by name), read into memory.
fn pick_photos(n: usize) -> Vec<(String, Vec<u8>)> {
    let dir = benches::photos_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    files.sort();
    assert!(
        files.len() >= n && n > 0,
        "need {n} photos in {}",
        dir.display()
    );
    let step = files.len() / n;
    files
        .iter()
        .step_by(step)
        .take(n)
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(p).expect("photo"))
        })
        .collect()
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(root: &Path, work: &Path) -> Server {
        // The build that made this program made `mask-web` beside it (whatever the target dir).
        let bin = std::env::var_os("MASK_WEB_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                Some(exe.parent()?.join("mask-web"))
            })
            .unwrap_or_else(|| root.join("target/debug/mask-web"));
        assert!(
            bin.is_file(),
            "{} missing: run `make build` (cargo build --workspace --all-targets) first",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(work.join("server.log")).expect("server log");
        let mut cmd = Command::new(&bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("MASK_WEB_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .env("MASK_WEB_ADDR", format!("127.0.0.1:{port}"))
            .env("MASK_WEB_DATA_DIR", work.join("data"))
            .env("MASK_WEB_MODELS_DIR", root.join("models"))
            .env("MASK_WEB_ADMIN_PASSWORD", ADMIN_PASSWORD)
            // Every simulated client comes from 127.0.0.1: lift the per-address share so the
            // levels measure the pool, not the per-client cap (which security_tests cover).
            .env("MASK_WEB_DETECT_PER_CLIENT", "1000")
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start mask-web");
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "mask-web exited with {status}; see {}",
                    work.join("server.log").display()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "mask-web not listening after 120 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGINT (graceful), then SIGKILL after 15 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_args() -> Args {
    let mut a = Args {
        levels: vec![1, 2, 4, 8, 32],
        seconds: 20,
        photos: 12,
        max_rss_mib: 1024,
        json: None,
        url: None,
        pids: Vec::new(),
        busy_bound_ms: BUSY_BOUND.as_secs_f64() * 1e3,
        token_auth: false,
        pages: true,
        warm_up: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--levels" => {
                a.levels = value()
                    .split(',')
                    .map(|v| v.parse().expect("--levels 1,2,4"))
                    .collect()
            }
            "--seconds" => a.seconds = value().parse().expect("--seconds N"),
            "--photos" => a.photos = value().parse().expect("--photos N"),
            "--max-rss-mib" => a.max_rss_mib = value().parse().expect("--max-rss-mib N"),
            "--json" => a.json = Some(PathBuf::from(value())),
            "--url" => a.url = Some(value()),
            "--warm-up" => a.warm_up = true,
            "--pages" => {
                a.pages = match value().as_str() {
                    "on" => true,
                    "off" => false,
                    other => panic!("--pages on|off, not {other}"),
                }
            }
            "--auth" => {
                a.token_auth = match value().as_str() {
                    "token" => true,
                    "password" => false,
                    other => panic!("--auth token|password, not {other}"),
                }
            }
            "--busy-bound-ms" => a.busy_bound_ms = value().parse().expect("--busy-bound-ms N"),
            "--pids" => {
                a.pids = value()
                    .split(',')
                    .map(|v| v.parse().expect("--pids 123,456"))
                    .collect()
            }
            "--user" => {
                let name = value();
                assert!(
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                    "--user takes letters and digits"
                );
                let _ = USER_NAME.set(name);
            }
            "-h" | "--help" => {
                println!(
                    "usage: load [--levels 1,2,4,8,32] [--seconds 20] [--photos 12] [--max-rss-mib 1024] [--json FILE] [--auth password|token] [--pages on|off] [--warm-up] [--url URL --pids PID,PID --user NAME --busy-bound-ms N]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        a.seconds > 0 && !a.levels.is_empty() && a.levels.iter().all(|&c| c > 0),
        "levels and seconds must be positive"
    );
    a
}
