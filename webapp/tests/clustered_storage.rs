//! The web app on the clustered storage: two app instances on one PostgreSQL database and one
//! S3 bucket prefix (the servers `webapp/test_support/services.py` starts; `make rust-test`
//! runs this through it, and without them every test prints SKIPPED).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use accounts::PgPool;
use common::*;
use serde_json::Value;
use webapp::app::Storage;
use webapp::config::{Secret, Settings};

/// The database URL and S3 settings of the test servers, or `None` (with the reason printed).
fn cluster_env() -> Option<(String, [String; 5])> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(pg), Some(endpoint), Some(region), Some(bucket), Some(key), Some(secret)) = (
        get("MASK_TEST_POSTGRES"),
        get("MASK_TEST_S3_ENDPOINT"),
        get("MASK_TEST_S3_REGION"),
        get("MASK_TEST_S3_BUCKET"),
        get("MASK_TEST_S3_ACCESS_KEY"),
        get("MASK_TEST_S3_SECRET_KEY"),
    ) else {
        eprintln!(
            "SKIPPED: MASK_TEST_POSTGRES and MASK_TEST_S3_* are not set (make test starts the \
             servers through webapp/test_support/services.py)"
        );
        return None;
    };
    Some((pg, [endpoint, region, bucket, key, secret]))
}

/// The image format of `bytes` by its magic number (PNG or JPEG), if it is one.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG") {
        Some("png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("jpeg")
    } else {
        None
    }
}

/// A new database on the test server; its URL, and a prefix in the bucket of the same name.
fn fresh_database(admin_url: &str) -> (String, String) {
    let url = pg_pool::testing::scratch_database(admin_url, "web").unwrap();
    let name = url.rsplit_once('/').unwrap().1.to_string();
    (url, name)
}

fn clustered(settings: &mut Settings, url: &str, prefix: &str, s3: &[String; 5]) {
    let st = &mut settings.storage;
    st.database_url = Some(Secret(url.to_string()));
    st.database_pool_size = 4;
    st.s3_endpoint = Some(s3[0].clone());
    st.s3_region = s3[1].clone();
    st.s3_bucket = Some(s3[2].clone());
    st.s3_access_key_id = Some(s3[3].clone());
    st.s3_secret_access_key = Some(Secret(s3[4].clone()));
    st.s3_prefix = prefix.to_string();
    st.orphan_grace_minutes = 1;
}

#[tokio::test]
async fn two_instances_share_users_sessions_tokens_and_uploads() {
    let Some((pg, s3)) = cluster_env() else {
        return;
    };
    let (url, prefix) = fresh_database(&pg);
    let a = server_with(|s| clustered(s, &url, &prefix, &s3)).await;
    let b = server_with(|s| clustered(s, &url, &prefix, &s3)).await;
    assert!(matches!(a.app.storage, Storage::Clustered { .. }));

    // Registered through A, logged in through B.
    user(&a, "vera").await;
    let mut on_b = Client::new(&b.base);
    assert_eq!(on_b.login("vera", "vera-password").await.status, 303);

    // Links signed by A verify on B: the key is the one the first instance stored.
    let vera = a.app.accounts.user_by_username("vera").unwrap().unwrap();
    let invite = a.app.accounts.issue_invite_token(vera.id).unwrap();
    b.app
        .accounts
        .verify_token(accounts::TokenPurpose::Invite, &invite)
        .unwrap();

    // An API token issued by A works on B.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/token", a.base))
        .form(&[("username", "vera"), ("password", "vera-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = r.json::<Value>().await.unwrap()["payload"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (ct, body) = multipart(&[], Some(("photo.png", &photo("maksssksksss0.png"))));
    let r = http
        .post(format!("{}/api/upload", b.base))
        .bearer_auth(&token)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["payload"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The upload stored through B is read through A, images and all.
    let mut on_a = Client::new(&a.base);
    assert_eq!(on_a.login("vera", "vera-password").await.status, 303);
    for kind in ["original", "annotated", "thumb"] {
        let bytes = on_a.get_bytes(&format!("/images/{id}/{kind}")).await;
        assert!(
            image_type(&bytes).is_some(),
            "{kind}: {:?}",
            &bytes[..bytes.len().min(64)]
        );
    }
    assert_eq!(on_a.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn maintenance_runs_on_one_instance_at_a_time_and_sweeps_orphan_objects() {
    let Some((pg, s3)) = cluster_env() else {
        return;
    };
    let (url, prefix) = fresh_database(&pg);
    let a = server_with(|s| clustered(s, &url, &prefix, &s3)).await;
    let Storage::Clustered { history, .. } = &a.app.storage else {
        panic!("not clustered");
    };
    let history = history.clone();
    let orphan = "ab/abababababababababababababababab-original.png";

    // Hold the job's lock as another instance would (waiting out the app's own start-up run if
    // it has it): this instance's run is skipped and the orphan stays.
    let other = PgPool::connect(&url, 1).unwrap();
    let (app, h, clock) = (a.app.clone(), history.clone(), a.history_clock.clone());
    let skipped = tokio::task::spawn_blocking(move || {
        loop {
            let held = other
                .exclusive(webapp::jobs::JOB_LOCK, || {
                    h.put_raw(orphan, photo("maksssksksss0.png")).unwrap();
                    // Older than the one-minute grace by the app's clock.
                    clock.advance_ms(2 * 60 * 1000);
                    let run = webapp::jobs::run_once(&app).unwrap();
                    assert!(h.list_raw().unwrap().iter().any(|k| k == orphan));
                    run
                })
                .unwrap();
            match held {
                Some(run) => return run,
                None => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    })
    .await
    .unwrap();
    assert!(skipped.skipped, "{skipped:?}");
    assert_eq!(skipped.orphans, 0);

    // Without the other holder the job runs and the orphan goes.
    let app = a.app.clone();
    let done = tokio::task::spawn_blocking(move || webapp::jobs::run_once(&app))
        .await
        .unwrap()
        .unwrap();
    assert!(!done.skipped);
    assert!(done.orphans <= 1, "{done:?}");
    assert!(
        !history.list_raw().unwrap().iter().any(|k| k == orphan),
        "the orphan object is still there after the job: {done:?}"
    );
}
