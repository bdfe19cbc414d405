//! End to end over real HTTP with the real models on real photos: upload by file and URL, the
//! result page, history tabs, owner isolation, images, deletion, the detection API and its limits,
//! and the private-address guard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::Value;

async fn upload_file(c: &mut Client, name: &str, bytes: &[u8]) -> Page {
    let csrf = c.csrf("/upload").await;
    c.post_multipart("/upload", &[("csrf_token", &csrf)], Some((name, bytes)))
        .await
}

#[tokio::test]
async fn upload_a_photo_see_the_result_and_the_history_tabs() {
    let s = server().await;
    let mut c = user(&s, "ann").await;
    let form = c.get("/upload").await;
    assert!(
        form.body.contains("name=\"file\"")
            && form.body.contains("name=\"url\"")
            && form.body.contains("/static/upload.js")
    );

    // maksssksksss0: one masked and two unmasked faces.
    let p = upload_file(&mut c, "street <b>.png", &photo("maksssksksss0.png")).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let result_url = p.location.unwrap();
    assert!(result_url.starts_with("/results/"));
    let page = c.get(&result_url).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<b>"), "file name not escaped");
    assert!(
        page.body.contains("some faces wearing masks"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("street &lt;b&gt;.png") || page.body.contains("street &#60;b&#62;.png"),
        "file name escaped"
    );
    assert!(page.body.contains("id=\"faces\"") && page.body.contains("no_mask"));
    let id = result_url.trim_start_matches("/results/").to_string();
    for kind in ["original", "annotated", "thumb"] {
        let img = c.get(&format!("/images/{id}/{kind}")).await;
        assert_eq!(img.status, 200, "{kind}");
        let ct = img.headers["content-type"].to_str().unwrap();
        assert!(ct.starts_with("image/"), "{kind}: {ct}");
        assert!(
            img.headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("private")
        );
    }

    // A grey picture with nobody in it: no face.
    let mut grey = Vec::new();
    let img = mask_detect::image::RgbImage::from_pixel(
        200,
        150,
        mask_detect::image::Rgb([120, 120, 120]),
    );
    mask_detect::image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut grey),
            mask_detect::image::ImageFormat::Png,
        )
        .unwrap();
    let p = upload_file(&mut c, "grey.png", &grey).await;
    let page = c.get(&p.location.unwrap()).await;
    assert!(page.body.contains("no face detected"));

    let all = c.get("/history?tab=all").await;
    assert!(
        all.body.contains("All (2)")
            && all.body.contains("No face (1)")
            && all.body.contains("Some masked (1)"),
        "{}",
        all.body
    );
    let no_face = c.get("/history?tab=no_face").await;
    assert!(no_face.body.contains("grey.png") && !no_face.body.contains("street"));
    let some = c.get("/history?tab=some_masked").await;
    assert!(some.body.contains(&id) && !some.body.contains("grey.png"));
    assert!(
        c.get("/history?tab=all_masked")
            .await
            .body
            .contains("Nothing here yet.")
    );
    assert_eq!(c.get("/history?tab=bogus").await.status, 400);
}

#[tokio::test]
async fn another_user_gets_404_for_results_images_and_deletes() {
    let s = server().await;
    let mut owner = user(&s, "olga").await;
    let p = upload_file(&mut owner, "a.png", &photo("maksssksksss1.png")).await;
    let id = p
        .location
        .unwrap()
        .trim_start_matches("/results/")
        .to_string();
    let mut other = user(&s, "oscar").await;
    assert_eq!(other.get(&format!("/results/{id}")).await.status, 404);
    for kind in ["original", "annotated", "thumb"] {
        assert_eq!(other.get(&format!("/images/{id}/{kind}")).await.status, 404);
    }
    let csrf = other.csrf("/upload").await;
    assert_eq!(
        other
            .post(&format!("/history/{id}/delete"), &[("csrf_token", &csrf)])
            .await
            .status,
        404
    );
    assert_eq!(
        Client::new(&s.base)
            .get(&format!("/images/{id}/original"))
            .await
            .status,
        404
    );
    // The owner can delete it; then it is gone.
    let csrf = owner.csrf("/upload").await;
    assert_eq!(
        owner
            .post(&format!("/history/{id}/delete"), &[("csrf_token", &csrf)])
            .await
            .location
            .as_deref(),
        Some("/history")
    );
    assert_eq!(owner.get(&format!("/results/{id}")).await.status, 404);
}

#[tokio::test]
async fn upload_errors_come_back_on_the_form_with_the_reason() {
    let s = server_with(|c| c.server.max_upload_bytes = 1024 * 1024).await;
    let mut c = user(&s, "eve").await;
    let csrf = c.csrf("/upload").await;
    let p = c
        .post_multipart("/upload", &[("csrf_token", &csrf)], None)
        .await;
    assert_eq!(p.status, 400);
    assert!(
        p.body.contains("Choose an image file or give an image URL"),
        "{}",
        p.body
    );
    let p = upload_file(&mut c, "notes.png", b"just some text, not an image").await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("Not an image"), "{}", p.body);
    let big = vec![0u8; 2 * 1024 * 1024];
    let p = upload_file(&mut c, "big.png", &big).await;
    assert_eq!(p.status, 413);
    let p = c
        .post_multipart("/upload", &[], Some(("a.png", &photo("maksssksksss1.png"))))
        .await;
    assert_eq!(p.status, 403, "no CSRF token");
}

#[tokio::test]
async fn upload_by_url_from_a_local_server() {
    let s = server_with(|c| c.server.allow_private_urls = true).await;
    let mut c = user(&s, "uma").await;
    // Served as text/plain: the content is sniffed, the header is not trusted.
    let (base, hits) = static_server(photo("maksssksksss0.png"), None).await;
    let csrf = c.csrf("/upload").await;
    let p = c
        .post_multipart(
            "/upload",
            &[
                ("csrf_token", &csrf),
                ("url", &format!("{base}/pics/street.png")),
            ],
            None,
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let page = c.get(&p.location.unwrap()).await;
    assert!(page.body.contains("some faces wearing masks"));
    assert!(page.body.contains(&format!("{base}/pics/street.png")));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A URL that is not an image.
    let (text_base, _) = static_server(b"hello".to_vec(), None).await;
    let p = c
        .post_multipart(
            "/upload",
            &[("csrf_token", &csrf), ("url", &format!("{text_base}/x"))],
            None,
        )
        .await;
    assert_eq!(p.status, 400);
    // Unreachable: nothing listens there any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = c
        .post_multipart(
            "/upload",
            &[
                ("csrf_token", &csrf),
                ("url", &format!("http://{closed}/x.png")),
            ],
            None,
        )
        .await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("unreachable"), "{}", p.body);
}

#[tokio::test]
async fn private_addresses_are_refused_before_any_connection() {
    // The default: private URLs off. Every target here is loopback, so even a broken guard could
    // only ever reach this machine.
    let s = server().await;
    let mut c = user(&s, "pat").await;
    let (base, hits) = static_server(photo("maksssksksss0.png"), None).await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let (redirector, redirect_hits) =
        static_server(Vec::new(), Some(format!("{base}/x.png"))).await;
    let csrf = c.csrf("/upload").await;
    for url in [
        format!("{base}/x.png"),
        format!("http://localhost:{port}/x.png"),
        format!("http://[::ffff:127.0.0.1]:{port}/x.png"),
        format!("http://2130706433:{port}/x.png"),
        format!("{redirector}/go"),
    ] {
        let p = c
            .post_multipart("/upload", &[("csrf_token", &csrf), ("url", &url)], None)
            .await;
        assert_eq!(p.status, 400, "{url}");
        assert!(p.body.contains("URL refused"), "{url}: {}", p.body);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the image server saw no connection"
    );
    assert_eq!(
        redirect_hits.load(Ordering::SeqCst),
        0,
        "the redirector saw no connection"
    );
}

#[tokio::test]
async fn api_upload_answers_201_400_401_413_with_json() {
    let s = server_with(|c| c.server.max_upload_bytes = 1024 * 1024).await;
    user(&s, "ivan").await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/upload", s.base);
    let send = |fields: Vec<(&'static str, &'static str)>, file: Option<Vec<u8>>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let (ct, body) = multipart(&fields, file.as_deref().map(|b| ("photo.png", b)));
            let r = http
                .post(url)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = send(
        vec![("username", "ivan"), ("password", "ivan-password")],
        Some(photo("maksssksksss0.png")),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["success"], true);
    let p = &body["payload"];
    assert_eq!(
        p["num_faces"].as_u64().unwrap(),
        p["faces"].as_array().unwrap().len() as u64
    );
    assert_eq!(p["category"], "some_masked");
    assert!(p["faces"][0]["box"].as_array().unwrap().len() == 4 && p["id"].is_string());
    assert!(
        s.app
            .history
            .counts(history_store::UserId(2))
            .unwrap()
            .total()
            == 1
    );

    let (status, body) = send(
        vec![("username", "ivan"), ("password", "wrong")],
        Some(photo("maksssksksss0.png")),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_u64()), (401, Some(401)));
    assert_eq!(body["success"], false);
    let (status, body) = send(vec![("username", "ivan")], Some(photo("maksssksksss0.png"))).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (400, Some(400)));
    let (status, _) = send(
        vec![("username", "ivan"), ("password", "ivan-password")],
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = send(
        vec![("username", "ivan"), ("password", "ivan-password")],
        Some(b"GIF89a-corrupt".to_vec()),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(
        vec![("username", "ivan"), ("password", "ivan-password")],
        Some(vec![7u8; 2 * 1024 * 1024]),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_u64()), (413, Some(413)));
}

#[tokio::test]
async fn oversized_bodies_get_413_without_being_read_whole() {
    let s = server_with(|c| c.server.max_upload_bytes = 1024 * 1024).await;
    // A declared 100 MiB body: refused from the header, before the body is sent.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/upload HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: {}\r\n\r\n",
        100 * 1024 * 1024
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"code\":413"), "{text}");

    // A chunked body with no length: refused (411, the multipart reader needs a length) or cut
    // off at the cap (413); never buffered whole.
    let chunks =
        futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 64 * 1024])));
    let (ct, _) = multipart(&[], None);
    let r = reqwest::Client::new()
        .post(format!("{}/api/upload", s.base))
        .header("content-type", ct)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(r) = r {
        assert!(matches!(r.status().as_u16(), 411 | 413), "{}", r.status());
    }
}

#[tokio::test]
async fn a_full_detection_queue_answers_503_with_retry_after() {
    let s = server_with(|c| {
        c.detector.detect_workers = 1;
        c.detector.detect_queue = 0;
    })
    .await;
    user(&s, "quinn").await;
    // Hold the only place in the pool, as a long detection by another client would.
    let _ticket = s.app.pool.admit("192.0.2.1").unwrap();
    let (ct, body) = multipart(
        &[("username", "quinn"), ("password", "quinn-password")],
        Some(("a.png", &photo("maksssksksss1.png"))),
    );
    let r = reqwest::Client::new()
        .post(format!("{}/api/upload", s.base))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 503);
}

#[tokio::test]
async fn one_address_gets_429_beyond_its_share_of_the_pool() {
    let s = server_with(|c| {
        c.detector.detect_workers = 1;
        c.detector.detect_queue = 8;
        c.detector.detect_per_client = 2;
    })
    .await;
    user(&s, "rhea").await;
    // Two places held by this test's own address (the server sees 127.0.0.1), as two slow
    // uploads would; the pool itself has room for seven more.
    let _a = s.app.pool.admit("127.0.0.1").unwrap();
    let _b = s.app.pool.admit("127.0.0.1").unwrap();
    let upload = || async {
        let (ct, body) = multipart(
            &[("username", "rhea"), ("password", "rhea-password")],
            Some(("a.png", &photo("maksssksksss1.png"))),
        );
        reqwest::Client::new()
            .post(format!("{}/api/upload", s.base))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap()
    };
    let r = upload().await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("your address"),
        "{body}"
    );
    drop(_a);
    assert_eq!(upload().await.status(), 201);
}

#[tokio::test]
async fn openapi_document_is_served() {
    let s = server().await;
    let r = reqwest::get(format!("{}/api/openapi.json", s.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["paths"]["/api/upload"]["post"].is_object());
    assert!(doc["paths"]["/api/register"]["post"].is_object());
}

#[tokio::test]
async fn the_accurate_preset_is_a_setting_of_the_web_app() {
    let photo = photo("maksssksksss0.png");
    let mut found = Vec::new();
    for preset in [mask_detect::Preset::Fast, mask_detect::Preset::Accurate] {
        let s = server_with(|c| c.detector.preset = preset).await;
        assert_eq!(s.app.detector.config().preset, preset);
        user(&s, "pat").await;
        let (ct, body) = multipart(
            &[("username", "pat"), ("password", "pat-password")],
            Some(("a.png", &photo)),
        );
        let r = reqwest::Client::new()
            .post(format!("{}/api/upload", s.base))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        found.push(v["payload"]["num_faces"].as_u64().unwrap());
    }
    // The accurate preset finds at least the faces the fast one finds on this photo.
    assert!(found[1] >= found[0] && found[0] >= 3, "{found:?}");
}

#[tokio::test]
async fn api_bearer_tokens_replace_the_password_and_end_when_revoked_or_the_password_changes() {
    let s = server().await;
    user(&s, "tara").await;
    let http = reqwest::Client::new();
    let token_of = |password: &'static str| {
        let (http, url) = (http.clone(), format!("{}/api/token", s.base));
        async move {
            let r = http
                .post(url)
                .form(&[("username", "tara"), ("password", password)])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let upload = |authorization: Option<String>| {
        let (http, url) = (http.clone(), format!("{}/api/upload", s.base));
        async move {
            let (ct, body) = multipart(&[], Some(("photo.png", &photo("maksssksksss0.png"))));
            let mut r = http.post(url).header("content-type", ct).body(body);
            if let Some(a) = authorization {
                r = r.header("authorization", a);
            }
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };

    let (status, body) = token_of("wrong").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = token_of("tara-password").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["payload"]["token_type"], "Bearer");
    assert_eq!(body["payload"]["expires_in"], 30 * 60);
    let token = body["payload"]["token"].as_str().unwrap().to_string();

    let (status, body) = upload(Some(format!("Bearer {token}"))).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["payload"]["id"].is_string());
    let (status, _) = upload(Some(format!("bearer {token}"))).await;
    assert_eq!(status, 201, "the scheme is case-insensitive");
    // No credentials: the original API's 400 for the missing fields.
    let (status, body) = upload(None).await;
    assert_eq!(
        (status, body["success"].as_bool()),
        (400, Some(false)),
        "{body}"
    );
    // A made-up token, another scheme: 401 with a JSON reason.
    for auth in [
        Some("Bearer not-a-token".to_string()),
        Some(format!("Basic {token}")),
    ] {
        let (status, body) = upload(auth.clone()).await;
        assert_eq!(
            (status, body["success"].as_bool()),
            (401, Some(false)),
            "{auth:?}"
        );
    }

    // A password change ends every token; a new one works.
    let tara = s.app.accounts.user_by_username("tara").unwrap().unwrap();
    s.app
        .accounts
        .change_password(tara.id, "tara-password", "tara-new-password", None)
        .unwrap();
    assert_eq!(upload(Some(format!("Bearer {token}"))).await.0, 401);
    let (_, body) = token_of("tara-new-password").await;
    let token = body["payload"]["token"].as_str().unwrap().to_string();
    assert_eq!(upload(Some(format!("Bearer {token}"))).await.0, 201);

    // Revoked: it stops working, and revoking twice is a 401.
    let revoke = || {
        let (http, url, token) = (http.clone(), format!("{}/api/token", s.base), token.clone());
        async move {
            http.delete(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(revoke().await, 200);
    assert_eq!(upload(Some(format!("Bearer {token}"))).await.0, 401);
    assert_eq!(revoke().await, 401);
    assert_eq!(
        s.app
            .history
            .counts(history_store::UserId(tara.id.0))
            .unwrap()
            .total(),
        3
    );
}

#[tokio::test]
async fn token_requests_are_throttled_like_logins() {
    let s = server().await;
    user(&s, "uri").await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = http
            .post(format!("{}/api/token", s.base))
            .form(&[("username", "uri"), ("password", "wrong")])
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    let r = http
        .post(format!("{}/api/token", s.base))
        .form(&[("username", "uri"), ("password", "uri-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "the right password is refused too while throttled"
    );
}
