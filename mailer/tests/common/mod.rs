//! A real SMTP server (tools/smtp_server.py on aiosmtpd) as a child process, killed on drop.

// Each test binary uses a different part; a broken fixture should panic.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The venv Python: `$MASK_TEST_PYTHON` (exported by the Makefile), else `../.venv/bin/python`.
/// Missing both is a test failure, not a skip: these tests are the crate's proof of delivery.
pub fn python() -> PathBuf {
    let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let from_env = std::env::var_os("MASK_TEST_PYTHON").map(PathBuf::from);
    if let Some(path) = &from_env
        && path.exists()
    {
        return path.clone();
    }
    if fallback.exists() {
        return fallback;
    }
    panic!(
        "no Python for the SMTP test server: MASK_TEST_PYTHON is {from_env:?} and {} does not \
         exist; run `make venv` (it installs aiosmtpd into .venv) or set MASK_TEST_PYTHON to a \
         Python with aiosmtpd",
        fallback.display()
    );
}

pub fn server_script() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/smtp_server.py");
    assert!(script.exists(), "{} is missing", script.display());
    script
}

/// What the server received: the JSON sidecar written next to each `.eml`.
#[derive(Debug, Clone)]
pub struct Received(pub Value);

impl Received {
    pub fn str(&self, key: &str) -> &str {
        self.0[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing in {:#}", self.0))
    }
    pub fn rcpt_tos(&self) -> Vec<String> {
        self.0["rcpt_tos"]
            .as_array()
            .expect("rcpt_tos")
            .iter()
            .map(|v| v.as_str().expect("address").to_owned())
            .collect()
    }
}

pub struct SmtpServer {
    child: Child,
    // Held open: the server exits when its stdin closes, so it cannot outlive a crashed test.
    _stdin: ChildStdin,
    pub port: u16,
    pub maildir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start(extra_args: &[&str]) -> SmtpServer {
        let maildir = tempfile::tempdir().expect("maildir");
        let mut child = Command::new(python())
            .arg(server_script())
            .args(["--port", "0", "--maildir"])
            .arg(maildir.path())
            .args(extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the SMTP test server");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        let port = line
            .trim()
            .strip_prefix("LISTENING 127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("SMTP test server did not start (first line {line:?}); see its stderr above")
            });
        SmtpServer {
            child,
            _stdin: stdin,
            port,
            maildir,
        }
    }

    /// Every message received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        let mut emls: Vec<PathBuf> = std::fs::read_dir(self.maildir.path())
            .expect("read maildir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        emls.sort();
        emls.iter()
            .map(|eml| {
                let json = std::fs::read_to_string(eml.with_extension("json")).expect("sidecar");
                Received(serde_json::from_str(&json).expect("sidecar JSON"))
            })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Parses an `.eml` file the same way the server parses what it receives.
pub fn parse_eml(path: &Path) -> Received {
    let out = Command::new(python())
        .arg(server_script())
        .arg("--parse-eml")
        .arg(path)
        .output()
        .expect("run smtp_server.py --parse-eml");
    assert!(
        out.status.success(),
        "--parse-eml failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Received(serde_json::from_slice(&out.stdout).expect("parsed JSON"))
}

/// Polls `f` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Captures everything logged (all levels) on the current thread while the guard lives.
///
/// One global TRACE subscriber serves every test of the binary and writes each event into the
/// buffer of the thread it happens on, if that thread has a capture. (A per-thread default
/// subscriber, as `tracing::subscriber::set_default` gives, can lose events: tracing caches each
/// callsite's interest globally, and a callsite first reached on a thread without a subscriber,
/// while another test was installing its own, could stay cached as uninteresting.)
pub struct LogCapture {
    buffer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<std::sync::Arc<std::sync::Mutex<Vec<u8>>>>> =
        const { std::cell::RefCell::new(None) };
}

impl LogCapture {
    pub fn start() -> LogCapture {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(|| ThreadWriter)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the mailer tests");
        });
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        CAPTURE.with(|c| *c.borrow_mut() = Some(buffer.clone()));
        LogCapture { buffer }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        CAPTURE.with(|c| *c.borrow_mut() = None);
    }
}

/// Writes into the current thread's capture buffer, or nowhere.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(buffer) = c.borrow().as_ref() {
                buffer.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Undoes HTML entity escaping of `&`, `<`, `>`, `"`, `'` (named or numeric), to compare links.
pub fn unescape(html: &str) -> String {
    html.replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}
