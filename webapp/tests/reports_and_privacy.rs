//! Over real HTTP: trends (SVG chart and table, per user, all users for administrators),
//! exports (CSV, JSON, per tab), the privacy settings (metadata stripped from stored originals,
//! faces blurred when configured) and "delete all my uploads".

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

async fn upload(c: &mut Client, name: &str, bytes: &[u8]) -> String {
    let csrf = c.csrf("/upload").await;
    let p = c
        .post_multipart("/upload", &[("csrf_token", &csrf)], Some((name, bytes)))
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    p.location
        .unwrap()
        .trim_start_matches("/results/")
        .to_string()
}

fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    webapp::web::civil_from_days(days as i64)
}

#[tokio::test]
async fn trends_chart_and_table_count_uploads_per_day_and_category() {
    let s = server().await;
    let mut ann = user(&s, "ann").await;
    let mut bob = user(&s, "bob").await;
    upload(&mut ann, "a.png", &photo("maksssksksss0.png")).await;
    upload(&mut ann, "b.png", &photo("maksssksksss1.png")).await;
    upload(&mut bob, "c.png", &photo("maksssksksss1.png")).await;

    let day = today();
    let p = ann.get("/trends").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("<svg id=\"trend-chart\""), "{}", p.body);
    assert!(p.body.contains("class=\"bar "), "no bars drawn");
    // Ann's own two uploads, in today's row (the last of the default 30 days).
    let row = p
        .body
        .split("<tr>")
        .find(|r| r.contains(&format!("<td>{day}</td>")))
        .expect("today's row");
    assert!(
        row.ends_with("<td>2</td></tr>\n") || row.contains("<td>2</td></tr>"),
        "{row}"
    );
    assert!(
        p.body.contains(": 2 in all"),
        "chart title counts Ann's two"
    );

    // The administrator sees everybody's three, or only their own with scope=mine.
    let mut admin = Client::new(&s.base);
    admin.login(ADMIN, ADMIN_PASSWORD).await;
    let all = admin.get("/trends").await;
    assert!(all.body.contains(": 3 in all"), "{}", all.body);
    let mine = admin.get("/trends?scope=mine").await;
    assert!(mine.body.contains(": 0 in all"));

    // A chosen range, and bad ranges.
    let p = ann.get(&format!("/trends?from={day}&to={day}")).await;
    assert_eq!(p.body.matches("<tr><td>").count(), 1);
    assert_eq!(ann.get("/trends?from=2026-02-30").await.status, 400);
    assert_eq!(
        ann.get("/trends?from=2026-03-01&to=2026-02-01")
            .await
            .status,
        400
    );
    assert_eq!(
        ann.get("/trends?from=2020-01-01&to=2026-01-01")
            .await
            .status,
        400
    );
    // Logged out: to the login page.
    let p = Client::new(&s.base).get("/trends").await;
    assert_eq!(p.status, 303);
}

#[tokio::test]
async fn exports_list_the_users_own_entries_as_csv_and_json() {
    let s = server().await;
    let mut ann = user(&s, "ann").await;
    let mut bob = user(&s, "bob").await;
    let id = upload(&mut ann, "=cmd().png", &photo("maksssksksss0.png")).await;
    upload(&mut bob, "bobs.png", &photo("maksssksksss1.png")).await;

    let r = ann.get("/history/export?format=json").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let rows: Value = serde_json::from_str(&r.body).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "only Ann's own entry");
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["category"], "some_masked");
    assert_eq!(rows[0]["num_faces"], 3);
    assert_eq!(rows[0]["faces"].as_array().unwrap().len(), 3);
    assert!(rows[0]["created_at"].as_str().unwrap().ends_with('Z'));

    let r = ann.get("/history/export?format=csv").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.body);
    assert!(lines[0].starts_with("id,created_at,file_name"));
    assert!(
        lines[1].contains(",'=cmd().png,"),
        "formula guarded: {}",
        lines[1]
    );
    assert!(lines[1].contains(",some_masked,3,1,2,"), "{}", lines[1]);

    // Per tab.
    let r = ann.get("/history/export?format=json&tab=no_face").await;
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        serde_json::json!([])
    );
    assert_eq!(ann.get("/history/export?format=xml").await.status, 400);
    assert_eq!(ann.get("/history/export?tab=nope").await.status, 400);
}

/// A PNG with a text chunk carrying a GPS-like position, as editors write them.
fn png_with_position(bytes: &[u8]) -> Vec<u8> {
    // After the 8-byte signature and the 25-byte IHDR chunk.
    let text = b"GPSPosition\x0052.3702,4.8952";
    let mut chunk = Vec::new();
    chunk.extend_from_slice(&(text.len() as u32).to_be_bytes());
    chunk.extend_from_slice(b"tEXt");
    chunk.extend_from_slice(text);
    let crc = crc32(&[b"tEXt".as_slice(), text].concat());
    chunk.extend_from_slice(&crc.to_be_bytes());
    let mut out = bytes[..33].to_vec();
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&bytes[33..]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn stored_originals_lose_their_metadata_by_default_and_keep_it_when_told() {
    let tagged = png_with_position(&photo("maksssksksss1.png"));
    assert!(tagged.windows(11).any(|w| w == b"GPSPosition"));
    let s = server().await;
    let mut ann = user(&s, "ann").await;
    let id = upload(&mut ann, "gps.png", &tagged).await;
    let original = ann.get_bytes(&format!("/images/{id}/original")).await;
    assert!(
        !original.windows(11).any(|w| w == b"GPSPosition"),
        "position kept"
    );
    let privacy = ann.get("/privacy").await;
    assert!(
        privacy.body.contains("without their metadata"),
        "{}",
        privacy.body
    );

    let keep = server_with(|c| c.history.strip_metadata = false).await;
    let mut bob = user(&keep, "bob").await;
    let id = upload(&mut bob, "gps.png", &tagged).await;
    let original = bob.get_bytes(&format!("/images/{id}/original")).await;
    assert_eq!(
        original.as_slice(),
        tagged.as_slice(),
        "the control keeps the upload as sent"
    );
}

#[tokio::test]
async fn faces_are_blurred_in_annotated_copies_when_configured() {
    let photo = photo("maksssksksss0.png");
    let sharp = server().await;
    let blurred = server_with(|c| c.history.blur_faces = true).await;
    let mut images = Vec::new();
    for s in [&sharp, &blurred] {
        let mut c = user(s, "cy").await;
        let id = upload(&mut c, "p.png", &photo).await;
        let bytes = c.get_bytes(&format!("/images/{id}/annotated")).await;
        images.push(
            mask_detect::image::load_from_memory(&bytes)
                .unwrap()
                .to_rgb8(),
        );
        if s.app.settings.history.blur_faces {
            assert!(
                c.get("/privacy")
                    .await
                    .body
                    .contains("<strong>blurred</strong>")
            );
        }
    }
    // The first face's box (from a detection of the same photo) differs between the two.
    let detector = &sharp.app.detector;
    let d = detector.detect_bytes(&photo).unwrap();
    let [x1, y1, x2, y2] = d.faces[0].bbox;
    let (cx, cy) = (((x1 + x2) / 2.0) as u32, ((y1 + y2) / 2.0) as u32);
    let mut differing = 0;
    for y in cy.saturating_sub(3)..cy + 3 {
        for x in cx.saturating_sub(3)..cx + 3 {
            if images[0].get_pixel(x, y) != images[1].get_pixel(x, y) {
                differing += 1;
            }
        }
    }
    assert!(differing > 10, "face centre unchanged: {differing}");
}

#[tokio::test]
async fn delete_all_my_uploads_needs_confirmation_and_touches_no_one_else() {
    let s = server().await;
    let mut ann = user(&s, "ann").await;
    let mut bob = user(&s, "bob").await;
    upload(&mut ann, "a.png", &photo("maksssksksss1.png")).await;
    upload(&mut ann, "b.png", &photo("maksssksksss1.png")).await;
    upload(&mut bob, "c.png", &photo("maksssksksss1.png")).await;
    let csrf = ann.csrf("/privacy").await;
    let p = ann
        .post("/history/delete-all", &[("csrf_token", &csrf)])
        .await;
    assert_eq!(p.status, 400, "no confirmation");
    let p = ann.post("/history/delete-all", &[("confirm", "yes")]).await;
    assert_eq!(p.status, 403, "no CSRF token");
    let p = ann
        .post(
            "/history/delete-all",
            &[("csrf_token", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some("/privacy?deleted=2"));
    let h = ann.get("/history").await;
    assert!(h.body.contains("All (0)"), "{}", h.body);
    let h = bob.get("/history").await;
    assert!(h.body.contains("All (1)"), "{}", h.body);
}
