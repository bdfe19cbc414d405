//! Per-address limits over real HTTP from two loopback addresses (127.0.0.1 and 127.0.0.2):
//! failures from one address do not lock out the other, on the form login and the API; the
//! detection pool's per-client share is per address for form uploads; `X-Forwarded-For` is
//! ignored from an untrusted peer and honoured from a trusted proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const OTHER: &str = "127.0.0.2";
/// `[accounts] login_failures_per_address`'s default.
const PER_ADDRESS: usize = 20;

/// `n` failed form logins with made-up user names (each name stays under its own limit).
async fn fail_logins(c: &mut Client, n: usize) {
    for i in 0..n {
        let p = c.login(&format!("made-up-{i}"), "wrong-password").await;
        assert!(matches!(p.status, 401 | 429), "{}", p.status);
    }
}

#[tokio::test]
async fn form_login_failures_from_one_address_do_not_lock_out_another() {
    let s = server().await;
    let mut attacker = Client::from(&s.base, Some(OTHER));
    fail_logins(&mut attacker, PER_ADDRESS + 5).await;
    // The attacker's own address is throttled, even with the right password...
    assert_eq!(attacker.login(ADMIN, ADMIN_PASSWORD).await.status, 429);
    // ...and the administrator, from another address, is not.
    let mut admin = Client::from(&s.base, Some("127.0.0.1"));
    let p = admin.login(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(p.status, 303, "{}", p.body);
}

async fn api_upload(http: &reqwest::Client, base: &str, user: &str, password: &str) -> u16 {
    // No file: the credentials are checked first, so this costs no detection.
    let (ct, body) = multipart(&[("username", user), ("password", password)], None);
    http.post(format!("{base}/api/upload"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn http_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(local.parse().unwrap()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn api_failures_from_one_address_do_not_lock_out_another() {
    let s = server().await;
    let attacker = http_from(OTHER);
    for i in 0..PER_ADDRESS {
        let status = api_upload(&attacker, &s.base, &format!("ghost-{i}"), "wrong").await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        api_upload(&attacker, &s.base, ADMIN, ADMIN_PASSWORD).await,
        429
    );
    // From 127.0.0.1 the right credentials pass the check (400: no image given).
    let own = http_from("127.0.0.1");
    assert_eq!(api_upload(&own, &s.base, ADMIN, ADMIN_PASSWORD).await, 400);
}

#[tokio::test]
async fn form_uploads_take_their_detection_share_per_address() {
    let s = server_with(|c| {
        c.detector.detect_workers = 1;
        c.detector.detect_queue = 8;
        c.detector.detect_per_client = 1;
    })
    .await;
    // The same account logged in from two addresses.
    let mut here = Client::from(&s.base, Some("127.0.0.1"));
    assert_eq!(here.login(ADMIN, ADMIN_PASSWORD).await.status, 303);
    let mut there = Client::from(&s.base, Some(OTHER));
    assert_eq!(there.login(ADMIN, ADMIN_PASSWORD).await.status, 303);
    // 127.0.0.2 already holds its one place, as a slow upload would.
    let _held = s.app.pool.admit(OTHER).unwrap();
    let photo = photo("maksssksksss1.png");
    let csrf = there.csrf("/upload").await;
    let p = there
        .post_multipart("/upload", &[("csrf_token", &csrf)], Some(("a.png", &photo)))
        .await;
    assert_eq!(p.status, 429, "{}", p.body);
    assert!(p.body.contains("your address"), "{}", p.body);
    let csrf = here.csrf("/upload").await;
    let p = here
        .post_multipart("/upload", &[("csrf_token", &csrf)], Some(("a.png", &photo)))
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let s = server().await;
    let mut forger = Client::from(&s.base, Some(OTHER));
    // Claims to be a different client on every request.
    for i in 0..PER_ADDRESS {
        forger.headers = vec![("x-forwarded-for".into(), format!("192.0.2.{}", i + 1))];
        let p = forger
            .login(&format!("made-up-{i}"), "wrong-password")
            .await;
        assert_eq!(p.status, 401);
    }
    // Every failure was counted against the connection's address.
    forger.headers = vec![("x-forwarded-for".into(), "192.0.2.200".into())];
    assert_eq!(forger.login(ADMIN, ADMIN_PASSWORD).await.status, 429);
    // Forging the other address does not lock it out either.
    let mut admin = Client::from(&s.base, Some("127.0.0.1"));
    assert_eq!(admin.login(ADMIN, ADMIN_PASSWORD).await.status, 303);
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_names_the_client() {
    let s = server_with(|c| {
        c.server.trusted_proxies = vec![OTHER.parse().unwrap()];
        c.detector.detect_per_client = 1;
    })
    .await;
    // The "proxy" at 127.0.0.2 forwards for client 192.0.2.10, who fails too often.
    let mut proxied = Client::from(&s.base, Some(OTHER));
    proxied.headers = vec![("x-forwarded-for".into(), "192.0.2.10".into())];
    fail_logins(&mut proxied, PER_ADDRESS).await;
    assert_eq!(proxied.login(ADMIN, ADMIN_PASSWORD).await.status, 429);
    // Another client behind the same proxy is not locked out...
    let mut neighbour = Client::from(&s.base, Some(OTHER));
    neighbour.headers = vec![("x-forwarded-for".into(), "192.0.2.11".into())];
    assert_eq!(neighbour.login(ADMIN, ADMIN_PASSWORD).await.status, 303);
    // ...nor is the proxy's own address (no header).
    let mut direct = Client::from(&s.base, Some(OTHER));
    assert_eq!(direct.login(ADMIN, ADMIN_PASSWORD).await.status, 303);
    // The detection share follows the forwarded client too.
    let _held = s.app.pool.admit("192.0.2.10").unwrap();
    let (ct, body) = multipart(
        &[("username", ADMIN), ("password", ADMIN_PASSWORD)],
        Some(("a.png", &photo("maksssksksss1.png"))),
    );
    let r = http_from(OTHER)
        .post(format!("{}/api/upload", s.base))
        .header("x-forwarded-for", "192.0.2.10")
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}
