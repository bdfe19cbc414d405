//! Test harness: the real app on 127.0.0.1 with a real SQLite file, the real models, and a real
//! SMTP server process (tools/smtp_server.py on aiosmtpd); an HTTP client with a cookie jar.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use webapp::{App, Settings};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
pub const EVAL: &str = "../fixtures/photos";

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MASK_TEST_PYTHON")
        .map(PathBuf::from)
        .filter(|p| p.exists())
    {
        return p;
    }
    let p = PathBuf::from("../.venv/bin/python");
    assert!(
        p.exists(),
        "no Python with aiosmtpd: run `make venv` or set MASK_TEST_PYTHON"
    );
    p
}

/// A real SMTP server process writing what it receives into a directory.
pub struct Smtp {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Smtp {
    pub fn start() -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(python())
            .args(["../tools/smtp_server.py", "--port", "0", "--maildir"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP test server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .expect("LISTENING line");
        Smtp { child, port, dir }
    }

    /// Parsed messages received so far (the server's JSON sidecars), oldest first.
    pub fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                serde_json::from_str(&std::fs::read_to_string(p.with_extension("json")).unwrap())
                    .unwrap()
            })
            .collect()
    }

    /// Wait until a message to `to` arrives; return it.
    pub async fn wait_for(&self, to: &str, nth: usize) -> Value {
        for _ in 0..200 {
            let found: Vec<Value> = self
                .messages()
                .into_iter()
                .filter(|m| {
                    m["rcpt_tos"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r.as_str() == Some(to))
                })
                .collect();
            if found.len() > nth {
                return found[nth].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no message #{nth} to {to} arrived; got {:?}",
            self.messages()
        );
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first link in a message's text part that contains `path`.
pub fn link(message: &Value, path: &str) -> String {
    let text = message["text"].as_str().unwrap();
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| {
                c == '<' || c == '>' || c == '(' || c == ')' || c == '.' || c == ','
            })
        })
        .find(|w| w.starts_with("http") && w.contains(path))
        .unwrap_or_else(|| panic!("no {path} link in {text}"))
        .to_string()
}

pub struct Server {
    pub app: Arc<App>,
    pub base: String,
    pub data: tempfile::TempDir,
    pub clock: accounts::ManualClock,
    pub history_clock: Arc<history_store::ManualClock>,
    pub smtp: Smtp,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn server_with(edit: impl FnOnce(&mut Settings)) -> Server {
    server_on("127.0.0.1:0", edit).await
}

/// The app listening on `addr` (any loopback address, port 0 for a free one).
pub async fn server_on(addr: &str, edit: impl FnOnce(&mut Settings)) -> Server {
    let smtp = Smtp::start();
    let data = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut env: Vec<(String, String)> = vec![
        ("MASK_WEB_ADDR".into(), addr.to_string()),
        (
            "MASK_WEB_DATA_DIR".into(),
            data.path().display().to_string(),
        ),
        ("MASK_WEB_MODELS_DIR".into(), "../models".into()),
        ("MASK_WEB_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
        ("MASK_WEB_ADMIN_EMAIL".into(), "admin@example.com".into()),
        ("MASK_WEB_SMTP_HOST".into(), "127.0.0.1".into()),
        ("MASK_WEB_SMTP_PORT".into(), smtp.port.to_string()),
        ("MASK_WEB_SMTP_SECURITY".into(), "none".into()),
        (
            "MASK_WEB_MAIL_FROM".into(),
            "Mask Detect <noreply@example.com>".into(),
        ),
    ];
    env.push(("MASK_WEB_DETECT_WORKERS".into(), "2".into()));
    let mut settings = Settings::load(None, env.drain(..)).unwrap();
    edit(&mut settings);
    let clock = accounts::ManualClock::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    let history_clock = Arc::new(history_store::ManualClock::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    ));
    let clocks = webapp::Clocks {
        accounts: Some(Arc::new(clock.clone())),
        history: Some(history_clock.clone()),
    };
    let (app, _) = App::start_with_clocks(settings, clocks).await.unwrap();
    let task = tokio::spawn(webapp::server::serve(
        app.clone(),
        listener,
        std::future::pending(),
    ));
    Server {
        app,
        base: format!("http://{addr}"),
        data,
        clock,
        history_clock,
        smtp,
        task,
    }
}

pub async fn server() -> Server {
    server_with(|_| {}).await
}

/// A user registered through the API (password `NAME-password`), logged in on a new client.
pub async fn user(s: &Server, name: &str) -> Client {
    let r = reqwest::Client::new()
        .post(format!("{}/api/register", s.base))
        .form(&[
            ("username", name),
            ("password", &format!("{name}-password")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut c = Client::new(&s.base);
    assert_eq!(c.login(name, &format!("{name}-password")).await.status, 303);
    c
}

/// A browser-like client: a cookie jar, no automatic redirects.
pub struct Client {
    pub http: reqwest::Client,
    /// Extra headers sent with every request (e.g. `X-Forwarded-For`).
    pub headers: Vec<(String, String)>,
    pub base: String,
    pub cookies: HashMap<String, String>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client::from(base, None)
    }

    /// A client whose connections leave from `local` (e.g. 127.0.0.2).
    pub fn from(base: &str, local: Option<&str>) -> Client {
        Client {
            headers: Vec::new(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(local.map(|a| a.parse().unwrap()))
                .build()
                .unwrap(),
            base: base.to_string(),
            cookies: HashMap::new(),
        }
    }

    /// The jar as a `Cookie` header value.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, r: reqwest::Response) -> Page {
        for c in r.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Page {
            status: r.status().as_u16(),
            location: r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string()),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let r = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .headers(self.extra_headers())
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    fn extra_headers(&self) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in &self.headers {
            h.append(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// The body of a `GET` as bytes (images), with the client's cookies.
    pub async fn get_bytes(&self, path: &str) -> Vec<u8> {
        self.http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .headers(self.extra_headers())
            .body(body)
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    pub async fn post_multipart(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        file: Option<(&str, &[u8])>,
    ) -> Page {
        let (ct, body) = multipart(fields, file);
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", ct)
            .headers(self.extra_headers())
            .body(body)
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    /// The CSRF token of the last form on `path`.
    pub async fn csrf(&mut self, path: &str) -> String {
        let page = self.get(path).await;
        csrf_in(&page.body)
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Page {
        let csrf = self.csrf("/login").await;
        self.post(
            "/login",
            &[
                ("csrf_token", &csrf),
                ("username", user),
                ("password", password),
                ("next", "/"),
            ],
        )
        .await
    }
}

pub fn csrf_in(html: &str) -> String {
    let i = html
        .find("name=\"csrf_token\" value=\"")
        .expect("a form with a CSRF token")
        + 25;
    html[i..i + 64].to_string()
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "----mask-detect-test-boundary";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some((name, bytes)) = file {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub fn photo(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(EVAL).join(name)).unwrap()
}

/// A one-file HTTP server on 127.0.0.1 that answers every request with `body` (or a redirect);
/// returns its base URL and a counter of connections it accepted.
pub async fn static_server(
    body: Vec<u8>,
    redirect_to: Option<String>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = body.clone();
            let redirect_to = redirect_to.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = match &redirect_to {
                    Some(to) => format!(
                        "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                    None => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    ),
                };
                let _ = s.write_all(head.as_bytes()).await;
                if redirect_to.is_none() {
                    let _ = s.write_all(&body).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), hits)
}
