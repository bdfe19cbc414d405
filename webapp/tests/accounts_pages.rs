//! End to end over real HTTP: sign-in, user management, password flows by email, CSRF,
//! throttling, last-admin protection and the registration API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn pages_need_a_session_and_login_redirects_back_locally() {
    let s = server().await;
    let mut c = Client::new(&s.base);
    let p = c.get("/history").await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some("/login?next=/history"));
    let p = c.get("/login?next=/history").await;
    assert!(p.body.contains("name=\"username\"") && p.body.contains("name=\"password\""));
    let csrf = csrf_in(&p.body);
    let p = c
        .post(
            "/login",
            &[
                ("csrf_token", &csrf),
                ("username", ADMIN),
                ("password", ADMIN_PASSWORD),
                ("next", "/history"),
            ],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/history"));
    // An off-site `next` is never followed.
    let mut c2 = Client::new(&s.base);
    let csrf = c2.csrf("/login").await;
    let p = c2
        .post(
            "/login",
            &[
                ("csrf_token", &csrf),
                ("username", ADMIN),
                ("password", ADMIN_PASSWORD),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/"));
    let home = c2.get("/").await;
    assert!(home.body.contains("Mask detection") && home.body.contains("User management"));
    assert!(
        home.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
}

#[tokio::test]
async fn admin_invites_a_user_who_sets_a_password_by_email_link() {
    let s = server().await;
    let mut admin = Client::new(&s.base);
    assert_eq!(admin.login(ADMIN, ADMIN_PASSWORD).await.status, 303);
    let csrf = admin.csrf("/admin/users/new").await;
    let p = admin
        .post(
            "/admin/users/new",
            &[
                ("csrf_token", &csrf),
                ("username", "alice"),
                ("email", "alice@example.com"),
            ],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/users?notice=created"));
    let list = admin.get("/admin/users").await;
    assert!(list.body.contains("alice@example.com") && list.body.contains("pending"));

    let mail = s.smtp.wait_for("alice@example.com", 0).await;
    let text = mail["text"].as_str().unwrap();
    assert!(mail["html"].as_str().unwrap().contains("alice"));
    let link = link(&mail, "/password/reset?token=");
    let default_password = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Password:")
                .map(|p| p.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no default password in {text}"));

    // The default password logs in, and the user is sent to change it first.
    let mut alice = Client::new(&s.base);
    let p = alice.login("alice", &default_password).await;
    assert_eq!(p.location.as_deref(), Some("/password/change"));
    assert_eq!(
        alice.get("/upload").await.location.as_deref(),
        Some("/password/change")
    );

    // The invitation link sets a password of her own.
    let mut anon = Client::new(&s.base);
    let page = anon.get(&link).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let token = link.split("token=").nth(1).unwrap().to_string();
    let p = anon
        .post(
            "/password/reset",
            &[
                ("csrf_token", &csrf_in(&page.body)),
                ("token", &token),
                ("new_password", "alice-own-password"),
                ("confirm_password", "alice-own-password"),
            ],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/login?notice=password-set"));
    let mut alice2 = Client::new(&s.base);
    assert_eq!(
        alice2
            .login("alice", "alice-own-password")
            .await
            .location
            .as_deref(),
        Some("/")
    );
    let mut alice3 = Client::new(&s.base);
    assert_eq!(alice3.login("alice", &default_password).await.status, 401);
}

#[tokio::test]
async fn taken_username_comes_back_with_the_error() {
    let s = server().await;
    let mut admin = Client::new(&s.base);
    admin.login(ADMIN, ADMIN_PASSWORD).await;
    let csrf = admin.csrf("/admin/users/new").await;
    let p = admin
        .post(
            "/admin/users/new",
            &[
                ("csrf_token", &csrf),
                ("username", "Admin"),
                ("email", "x@example.com"),
            ],
        )
        .await;
    assert_eq!(p.status, 409);
    assert!(
        p.body.contains("That user name is taken.") && p.body.contains("value=\"x@example.com\"")
    );
}

#[tokio::test]
async fn forgot_password_link_works_once_and_not_after_expiry() {
    let s = server().await;
    let mut anon = Client::new(&s.base);
    let csrf = anon.csrf("/password/forgot").await;
    let known = anon
        .post(
            "/password/forgot",
            &[("csrf_token", &csrf), ("email", "admin@example.com")],
        )
        .await;
    let unknown = anon
        .post(
            "/password/forgot",
            &[("csrf_token", &csrf), ("email", "nobody@example.com")],
        )
        .await;
    assert_eq!(known.status, 200);
    assert_eq!(unknown.status, 200);
    let msg = |b: &str| b.contains("If that address is registered, a link is on its way.");
    assert!(msg(&known.body) && msg(&unknown.body), "no enumeration");

    let mail = s.smtp.wait_for("admin@example.com", 0).await;
    let reset_link = link(&mail, "/password/reset?token=");
    assert!(reset_link.starts_with(&s.base));
    let token = reset_link.split("token=").nth(1).unwrap().to_string();
    let form = anon.get(&reset_link).await;
    assert_eq!(form.status, 200);
    let csrf = csrf_in(&form.body);
    let set = |pw: &'static str| {
        [
            ("csrf_token", csrf.clone()),
            ("token", token.clone()),
            ("new_password", pw.to_string()),
            ("confirm_password", pw.to_string()),
        ]
    };
    let f = set("brand-new-password-1");
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        anon.post("/password/reset", &f).await.location.as_deref(),
        Some("/login?notice=password-set")
    );
    // Used once: the same link now fails with a clear page.
    let again = anon.post("/password/reset", &f).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("already been used") && again.body.contains("/password/forgot"));
    let mut c = Client::new(&s.base);
    assert_eq!(
        c.login(ADMIN, "brand-new-password-1")
            .await
            .location
            .as_deref(),
        Some("/")
    );

    // A second link, used after its 10 minutes: expired.
    let csrf2 = anon.csrf("/password/forgot").await;
    anon.post(
        "/password/forgot",
        &[("csrf_token", &csrf2), ("email", "admin@example.com")],
    )
    .await;
    let mail = s.smtp.wait_for("admin@example.com", 1).await;
    let link2 = link(&mail, "/password/reset?token=");
    s.clock.advance(Duration::from_secs(11 * 60));
    let expired = anon.get(&link2).await;
    assert_eq!(expired.status, 400);
    assert!(expired.body.contains("expired"), "{}", expired.body);
}

#[tokio::test]
async fn post_forms_without_the_right_csrf_token_are_forbidden() {
    let s = server().await;
    let mut c = Client::new(&s.base);
    c.get("/login").await;
    let p = c
        .post(
            "/login",
            &[("username", ADMIN), ("password", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(p.status, 403);
    let p = c
        .post(
            "/login",
            &[
                ("csrf_token", &"0".repeat(64)),
                ("username", ADMIN),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(p.status, 403);
    c.login(ADMIN, ADMIN_PASSWORD).await;
    let anon_token = c.cookies.get("mask_csrf").cloned().unwrap();
    // Logged in, only the session's token counts.
    let p = c
        .post(
            "/password/change",
            &[
                ("csrf_token", &anon_token),
                ("old_password", ADMIN_PASSWORD),
                ("new_password", "x-new-password"),
                ("confirm_password", "x-new-password"),
            ],
        )
        .await;
    assert_eq!(p.status, 403);
    let p = c.post("/admin/users/1/delete", &[]).await;
    assert_eq!(p.status, 403);
}

#[tokio::test]
async fn login_is_throttled_after_five_failures_with_the_same_answer() {
    let s = server().await;
    let mut c = Client::new(&s.base);
    for _ in 0..5 {
        assert_eq!(c.login(ADMIN, "wrong-password").await.status, 401);
    }
    let p = c.login(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(p.status, 429);
    assert!(p.body.contains("try again later"));
    // Unknown users get the same throttling answer, so names cannot be probed.
    for _ in 0..5 {
        assert_eq!(c.login("ghost", "wrong-password").await.status, 401);
    }
    assert_eq!(c.login("ghost", "wrong-password").await.status, 429);
    // After the window the right password works again.
    s.clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(c.login(ADMIN, ADMIN_PASSWORD).await.status, 303);
}

#[tokio::test]
async fn the_last_administrator_cannot_be_deleted() {
    let s = server().await;
    let mut c = Client::new(&s.base);
    c.login(ADMIN, ADMIN_PASSWORD).await;
    let csrf = c.csrf("/admin/users").await;
    let p = c
        .post("/admin/users/1/delete", &[("csrf_token", &csrf)])
        .await;
    assert_eq!(
        p.location.as_deref(),
        Some("/admin/users?notice=last-admin")
    );
    let list = c.get("/admin/users?notice=last-admin").await;
    assert!(
        list.body
            .contains("The last administrator cannot be deleted.")
    );
    assert!(list.body.contains("admin@example.com"));
}

#[tokio::test]
async fn deleting_a_user_removes_their_sessions_and_history() {
    let s = server().await;
    let http = reqwest::Client::new();
    let reg = http
        .post(format!("{}/api/register", s.base))
        .form(&[("username", "bob"), ("password", "bob-password-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(reg.status(), 201);
    let mut bob = Client::new(&s.base);
    bob.login("bob", "bob-password-1").await;
    let up = bob
        .post_multipart(
            "/api/upload",
            &[("username", "bob"), ("password", "bob-password-1")],
            Some(("a.png", &photo("maksssksksss0.png"))),
        )
        .await;
    assert_eq!(up.status, 201, "{}", up.body);
    let id = serde_json::from_str::<Value>(&up.body).unwrap()["payload"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bob.get(&format!("/results/{id}")).await.status, 200);

    let mut admin = Client::new(&s.base);
    admin.login(ADMIN, ADMIN_PASSWORD).await;
    let csrf = admin.csrf("/admin/users").await;
    let bob_id = s
        .app
        .accounts
        .user_by_username("bob")
        .unwrap()
        .unwrap()
        .id
        .0;
    let p = admin
        .post(
            &format!("/admin/users/{bob_id}/delete"),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/users?notice=deleted"));
    assert_eq!(bob.get("/history").await.status, 303, "bob's session ended");
    assert_eq!(
        s.app
            .history
            .counts(history_store::UserId(bob_id))
            .unwrap()
            .total(),
        0
    );
}

#[tokio::test]
async fn api_register_answers_201_409_400_with_json() {
    let s = server().await;
    let http = reqwest::Client::new();
    let post = |form: Vec<(&'static str, &'static str)>| {
        let http = http.clone();
        let url = format!("{}/api/register", s.base);
        async move {
            let r = http.post(url).form(&form).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(vec![("username", "carol"), ("password", "carol-password")]).await;
    assert_eq!(
        (status, body.clone()),
        (201, serde_json::json!({"success": true}))
    );
    let (status, body) = post(vec![("username", "Carol"), ("password", "carol-password")]).await;
    assert_eq!(status, 409);
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], 409);
    let (status, body) = post(vec![("username", "dave")]).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (400, Some(400)));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("password")
    );
    let (status, _) = post(vec![
        ("username", "bad name!"),
        ("password", "long-enough-1"),
    ])
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(vec![("username", "erin"), ("password", "short")]).await;
    assert_eq!(status, 400);
    // Multipart works too, as in the original API.
    let (ct, body) = multipart(
        &[("username", "frank"), ("password", "frank-password")],
        None,
    );
    let r = http
        .post(format!("{}/api/register", s.base))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn api_registration_can_require_an_admin_or_be_off() {
    let s =
        server_with(|c| c.server.api_registration = webapp::config::ApiRegistration::Admin).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/register", s.base);
    let r = http
        .post(&url)
        .form(&[("username", "gina"), ("password", "gina-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "admin fields missing");
    let r = http
        .post(&url)
        .form(&[
            ("username", "gina"),
            ("password", "gina-password"),
            ("admin_username", ADMIN),
            ("admin_password", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let off =
        server_with(|c| c.server.api_registration = webapp::config::ApiRegistration::Off).await;
    let r = http
        .post(format!("{}/api/register", off.base))
        .form(&[("username", "h"), ("password", "h-password-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn admin_sees_the_mail_delivery_log_and_can_send_a_test_email() {
    let s = server().await;
    let mut c = Client::new(&s.base);
    c.login(ADMIN, ADMIN_PASSWORD).await;
    let csrf = c.csrf("/admin/mail").await;
    let p = c
        .post(
            "/admin/mail/test",
            &[("csrf_token", &csrf), ("to", "ops@example.com")],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/admin/mail?sent=1"));
    let mail = s.smtp.wait_for("ops@example.com", 0).await;
    assert!(
        mail["subject"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("test")
    );
    let mut sent = false;
    for _ in 0..100 {
        let log = c.get("/admin/mail").await;
        if log.body.contains("ops@example.com") && log.body.contains("sent") {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sent, "delivery log shows the sent message");
}

#[tokio::test]
async fn health_check_answers() {
    let s = server().await;
    let r = reqwest::get(format!("{}/healthz", s.base)).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn next_never_leads_off_the_site_on_any_route_that_takes_it() {
    let s = server().await;
    let tricks = [
        "//evil.example/",
        "/\t/evil.example/",
        "/\n/evil.example/",
        "/\r/evil.example/",
        "/\\evil.example/",
        "\\\\evil.example/",
        "https://evil.example/",
        "/%2F%2Fevil.example/",
        "http:evil.example",
    ];
    for next in tricks {
        // POST /login: after a successful login.
        let mut c = Client::new(&s.base);
        let csrf = c.csrf("/login").await;
        let p = c
            .post(
                "/login",
                &[
                    ("csrf_token", &csrf),
                    ("username", ADMIN),
                    ("password", ADMIN_PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(p.status, 303, "{next:?}");
        let to = p.location.unwrap();
        assert!(local(&to), "POST /login next={next:?} -> {to:?}");
        // GET /login: an already logged-in visitor is sent on at once.
        let p = c.get(&format!("/login?next={}", enc(next))).await;
        assert_eq!(p.status, 303, "{next:?}");
        let to = p.location.unwrap();
        assert!(local(&to), "GET /login next={next:?} -> {to:?}");
        // The login form carries only the cleaned value.
        let mut anon = Client::new(&s.base);
        let form = anon.get(&format!("/login?next={}", enc(next))).await;
        assert!(
            !form.body.contains("evil.example") || form.body.contains("%2F%2Fevil"),
            "{next:?}"
        );
    }
}

/// A Location that a browser resolves on this server's own origin.
fn local(location: &str) -> bool {
    location.starts_with('/')
        && !location.starts_with("//")
        && !location.contains(['\\', '\t', '\n', '\r'])
}
