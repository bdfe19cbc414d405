//! End to end over real HTTP with the real models on real photos: `POST /api/detect` (session
//! cookie with its header, credentials, refusals, limits, nothing stored), the camera page, and
//! batch upload (several files, a zip, zip bombs and too many entries refused with nothing
//! recorded).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::*;
use serde_json::Value;

/// `POST /api/detect` with a raw body, the client's cookies and `headers`.
async fn detect_raw(c: &Client, ct: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = c
        .http
        .post(format!("{}/api/detect", c.base))
        .header("cookie", c.cookie_header())
        .header("content-type", ct)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// How many history entries `c`'s user has, from the history page's "All (n)" tab.
async fn recorded(c: &mut Client) -> usize {
    let page = c.get("/history").await;
    let i = page.body.find("All (").expect("the All tab") + 5;
    page.body[i..].split(')').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn detect_by_session_cookie_and_by_credentials_stores_nothing() {
    let s = server().await;
    let mut c = user(&s, "dora").await;
    let (status, body) = detect_raw(
        &c,
        "image/png",
        photo("maksssksksss0.png"),
        &[("x-requested-with", "test")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let payload = &body["payload"];
    assert_eq!(payload["num_faces"], 3, "{payload}");
    assert_eq!(payload["num_masked"], 1);
    assert_eq!(payload["category"], "some_masked");
    assert!(payload.get("id").is_none(), "nothing stored, so no id");
    assert_eq!(payload["faces"].as_array().unwrap().len(), 3);

    // By credentials, without a cookie, multipart like /api/upload.
    let anon = Client::new(&s.base);
    let (ct, form) = multipart(
        &[("username", "dora"), ("password", "dora-password")],
        Some(("p.png", &photo("maksssksksss1.png"))),
    );
    let (status, body) = detect_raw(&anon, &ct, form, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["payload"]["num_faces"].as_u64().unwrap() >= 1);

    // The session cookie in a multipart body works too, with the header.
    let (ct, form) = multipart(&[], Some(("p.png", &photo("maksssksksss1.png"))));
    let (status, _) = detect_raw(&c, &ct, form, &[("x-requested-with", "x")]).await;
    assert_eq!(status, 200);

    assert_eq!(recorded(&mut c).await, 0, "/api/detect stores nothing");
}

#[tokio::test]
async fn detect_refuses_cross_site_requests_and_anonymous_callers() {
    let s = server().await;
    let c = user(&s, "eve").await;
    let image = photo("maksssksksss0.png");
    // What a cross-site form (or a no-cors fetch) can send: the cookie, but no custom header.
    let (ct, form) = multipart(&[], Some(("p.png", &image)));
    let (status, body) = detect_raw(&c, &ct, form, &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Requested-With")
    );
    let (status, _) = detect_raw(&c, "image/png", image.clone(), &[]).await;
    assert_eq!(status, 403);
    // Neither cookie nor credentials; wrong credentials.
    let anon = Client::new(&s.base);
    let (status, body) = detect_raw(
        &anon,
        "image/png",
        image.clone(),
        &[("x-requested-with", "x")],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["success"], false);
    let (ct, form) = multipart(
        &[("username", "eve"), ("password", "wrong")],
        Some(("p.png", &image)),
    );
    assert_eq!(detect_raw(&anon, &ct, form, &[]).await.0, 401);
}

#[tokio::test]
async fn detect_refuses_bad_input_with_clear_4xx() {
    let s = server_with(|cfg| cfg.server.max_upload_bytes = 1024 * 1024).await;
    let c = user(&s, "fay").await;
    let h = [("x-requested-with", "x")];
    let (status, body) = detect_raw(&c, "image/png", b"not an image at all".to_vec(), &h).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = detect_raw(&c, "text/plain", b"hello".to_vec(), &h).await;
    assert_eq!(status, 415);
    let (status, body) = detect_raw(&c, "image/jpeg", vec![0u8; 2 * 1024 * 1024], &h).await;
    assert_eq!(status, 413, "{body}");
    let (ct, form) = multipart(&[], Some(("big.png", &vec![0u8; 2 * 1024 * 1024])));
    assert_eq!(detect_raw(&c, &ct, form, &h).await.0, 413);
    let (ct, form) = multipart(&[("note", "no file")], None);
    assert_eq!(detect_raw(&c, &ct, form, &h).await.0, 400);
}

#[tokio::test]
async fn camera_page_is_for_signed_in_users_and_loads_its_script() {
    let s = server().await;
    let mut anon = Client::new(&s.base);
    let p = anon.get("/camera").await;
    assert_eq!(p.status, 303);
    assert!(p.location.unwrap().starts_with("/login"));
    let mut c = user(&s, "gus").await;
    let p = c.get("/camera").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("/static/camera.js") && p.body.contains("id=\"camera-overlay\""));
    assert!(!p.body.contains("<script>"), "no inline script");
    let js = c.get("/static/camera.js").await;
    assert_eq!(js.status, 200);
    assert!(js.body.contains("/api/detect") && js.body.contains("X-Requested-With"));
    assert_eq!(c.get("/static/batch.js").await.status, 200);
}

/// A multipart body with a CSRF token and several `files` parts.
fn batch_form(csrf: &str, files: &[(&str, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "----batch-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{csrf}\r\n"
    )
    .into_bytes();
    for (name, bytes) in files {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post_batch(c: &mut Client, files: &[(&str, Vec<u8>)], json: bool) -> Page {
    let csrf = c.csrf("/batch").await;
    let (ct, body) = batch_form(&csrf, files);
    let mut req = c
        .http
        .post(format!("{}/batch", c.base))
        .header("cookie", c.cookie_header())
        .header("content-type", ct)
        .body(body);
    if json {
        req = req.header("accept", "application/json");
    }
    let r = req.send().await.unwrap();
    Page {
        status: r.status().as_u16(),
        location: None,
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut out);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap();
    out.into_inner()
}

/// Overwrite the declared uncompressed size of every entry, in the local headers and in the
/// central directory (the archive's bytes are searched for both signatures).
fn declare_size(zip: &mut [u8], size: u32) {
    let mut i = 0;
    while i + 30 <= zip.len() {
        match &zip[i..i + 4] {
            b"PK\x03\x04" => zip[i + 22..i + 26].copy_from_slice(&size.to_le_bytes()),
            b"PK\x01\x02" => zip[i + 24..i + 28].copy_from_slice(&size.to_le_bytes()),
            _ => {}
        }
        i += 1;
    }
}

#[tokio::test]
async fn batch_of_several_files_records_each_and_counts_by_category() {
    let s = server().await;
    let mut c = user(&s, "hal").await;
    let page = c.get("/batch").await;
    assert!(page.body.contains("multiple") && page.body.contains("/static/batch.js"));
    let p = post_batch(
        &mut c,
        &[
            ("a.png", photo("maksssksksss0.png")),
            ("b.png", photo("maksssksksss1.png")),
            ("broken.png", b"not a photo".to_vec()),
        ],
        false,
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(
        p.body.contains("2 photo(s) recorded, 1 could not be read"),
        "{}",
        p.body
    );
    assert!(p.body.contains("id=\"count-some_masked\""));
    assert!(p.body.contains("a.png") && p.body.contains("broken.png"));
    assert_eq!(recorded(&mut c).await, 2);

    // The script's way: one file per post, JSON back, then the summary by ids.
    let p = post_batch(&mut c, &[("c.png", photo("maksssksksss0.png"))], true).await;
    assert_eq!(p.status, 200, "{}", p.body);
    let v: Value = serde_json::from_str(&p.body).unwrap();
    let item = &v["items"][0];
    assert_eq!(item["category"], "some_masked", "{v}");
    let id = item["id"].as_str().unwrap().to_string();
    let summary = c.get(&format!("/batch/summary?ids={id},bogus")).await;
    assert_eq!(summary.status, 200);
    assert!(summary.body.contains("1 photo(s) recorded") && summary.body.contains(&id));
    // Someone else's ids are left out.
    let mut other = user(&s, "ivy").await;
    let theirs = other.get(&format!("/batch/summary?ids={id}")).await;
    assert!(theirs.body.contains("0 photo(s) recorded") && !theirs.body.contains(&id));

    // Without the CSRF token: 403, nothing recorded.
    let (ct, body) = batch_form(
        "0".repeat(64).as_str(),
        &[("d.png", photo("maksssksksss0.png"))],
    );
    let r = c
        .http
        .post(format!("{}/batch", c.base))
        .header("cookie", c.cookie_header())
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(recorded(&mut c).await, 3);
}

#[tokio::test]
async fn a_zip_of_photos_records_each_entry() {
    let s = server().await;
    let mut c = user(&s, "jon").await;
    let (p0, p1, p2) = (
        photo("maksssksksss0.png"),
        photo("maksssksksss1.png"),
        photo("maksssksksss2.png"),
    );
    let zip = zip_of(&[("one.png", &p0), ("dir/two.png", &p1), ("three.png", &p2)]);
    let p = post_batch(&mut c, &[("photos.zip", zip)], false).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("3 photo(s) recorded"), "{}", p.body);
    assert!(p.body.contains("photos.zip/dir/two.png"));
    assert_eq!(recorded(&mut c).await, 3);
}

#[tokio::test]
async fn zip_bombs_and_too_many_entries_get_a_clear_4xx_and_nothing_is_recorded() {
    let s = server().await;
    let mut c = user(&s, "kim").await;
    let ok = photo("maksssksksss0.png");
    let zeros = vec![0u8; 20 * 1024 * 1024];

    // Honest headers, 1000:1 compression.
    let bomb = zip_of(&[("ok.png", &ok), ("bomb.png", &zeros)]);
    assert!(bomb.len() < 1024 * 1024);
    let p = post_batch(
        &mut c,
        &[("a.png", ok.clone()), ("bomb.zip", bomb.clone())],
        false,
    )
    .await;
    assert_eq!(p.status, 413, "{}", p.body);
    assert!(p.body.contains("zip bomb"), "{}", p.body);

    // Lying headers: each entry declares a small size, the bomb inflates far beyond it.
    let mut liar = zip_of(&[("bomb.png", &zeros)]);
    declare_size(&mut liar, 100_000);
    let p = post_batch(&mut c, &[("liar.zip", liar)], true).await;
    assert!(
        p.status == 413 || p.status == 400,
        "{} {}",
        p.status,
        p.body
    );
    let v: Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(v["success"], false);
    assert!(!v["error"]["message"].as_str().unwrap().is_empty());

    // Declared sizes over the total.
    let mut huge = zip_of(&[("a.png", &ok)]);
    declare_size(&mut huge, 300 * 1024 * 1024);
    let p = post_batch(&mut c, &[("huge.zip", huge)], false).await;
    assert_eq!(p.status, 413, "{}", p.body);
    assert!(p.body.contains("MiB uncompressed"), "{}", p.body);

    // Too many entries.
    let names: Vec<String> = (0..101).map(|i| format!("{i}.png")).collect();
    let tiny: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let p = post_batch(&mut c, &[("many.zip", zip_of(&tiny))], false).await;
    assert_eq!(p.status, 413, "{}", p.body);
    assert!(p.body.contains("101 entries"), "{}", p.body);

    // Too many files in one form.
    let files: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (n.as_str(), b"x".to_vec())).collect();
    let p = post_batch(&mut c, &files, false).await;
    assert_eq!(p.status, 413, "{}", p.body);
    assert!(p.body.contains("too many files"), "{}", p.body);

    assert_eq!(
        recorded(&mut c).await,
        0,
        "nothing of a refused batch is recorded"
    );
}

#[tokio::test]
async fn detect_and_batch_keep_the_pool_limits_per_address_and_in_all() {
    let s = server_with(|cfg| {
        cfg.detector.detect_workers = 1;
        cfg.detector.detect_queue = 1;
        cfg.detector.detect_per_client = 1;
    })
    .await;
    let mut c = user(&s, "lou").await;
    let h = [("x-requested-with", "x")];
    // 127.0.0.1 already holds its one place, as a slow upload would: 429.
    let held = s.app.pool.admit("127.0.0.1").unwrap();
    let (status, body) = detect_raw(&c, "image/png", photo("maksssksksss1.png"), &h).await;
    assert_eq!(status, 429, "{body}");
    let p = post_batch(&mut c, &[("a.png", photo("maksssksksss1.png"))], true).await;
    assert_eq!(p.status, 429, "{}", p.body);
    // Every place taken: 503 with Retry-After.
    let _other = s.app.pool.admit("192.0.2.1").unwrap();
    drop(held);
    let _third = s.app.pool.admit("192.0.2.2").unwrap();
    let r = c
        .http
        .post(format!("{}/api/detect", s.base))
        .header("content-type", "image/png")
        .header("x-requested-with", "x")
        .header("cookie", c.cookie_header())
        .body(photo("maksssksksss1.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(recorded(&mut c).await, 0);
}
