//! Outbox mode: `.eml` files in a directory, links logged, nothing secret logged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns panic on broken fixtures

mod common;

use std::time::Duration;

use common::{LogCapture, parse_eml};
use mailer::{DeliveryStatus, Error, Mailer, MailerConfig, MessageKind, TransportConfig};

fn config(dir: &std::path::Path) -> MailerConfig {
    MailerConfig {
        product_name: "Mask Detect".to_owned(),
        base_url: "http://127.0.0.1:8080".to_owned(),
        transport: TransportConfig::Outbox {
            dir: dir.to_owned(),
        },
        ..MailerConfig::default()
    }
}

fn emls(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn messages_become_eml_files_and_links_are_logged() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("outbox/nested"); // created at start
    let logs = LogCapture::start();
    let mailer = Mailer::start(config(&dir)).unwrap();
    assert!(mailer.is_outbox());
    assert!(matches!(mailer.verify().await, Err(Error::NotSmtp)));

    let invite = mailer
        .send_invitation(
            "ada@example.org",
            "ada",
            "Default-Pa55-xyz",
            "/invite?token=INV1",
        )
        .unwrap();
    let d = mailer
        .wait_for_outcome(invite, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Sent);
    assert_eq!(d.kind, MessageKind::Invitation);
    let reset = mailer
        .send_password_reset(
            "ada@example.org",
            "ada",
            "http://127.0.0.1:8080/reset?token=RST2",
            Duration::from_secs(3600),
        )
        .unwrap();
    mailer
        .wait_for_outcome(reset, Duration::from_secs(10))
        .await
        .unwrap();

    let files = emls(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("-invitation.eml")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with("-password-reset.eml")),
        "{names:?}"
    );

    let inv = parse_eml(
        files
            .iter()
            .find(|f| f.to_string_lossy().contains("invitation"))
            .unwrap(),
    );
    assert_eq!(inv.str("subject"), "Your Mask Detect account");
    assert_eq!(inv.str("content_type"), "multipart/alternative");
    assert!(inv.str("to").contains("ada@example.org"));
    assert!(
        inv.str("text")
            .contains("http://127.0.0.1:8080/invite?token=INV1")
    );
    assert!(inv.str("text").contains("Default-Pa55-xyz"));
    assert!(
        inv.str("html")
            .contains(r#"href="http://127.0.0.1:8080/invite?token=INV1""#)
    );
    let rst = parse_eml(
        files
            .iter()
            .find(|f| f.to_string_lossy().contains("reset"))
            .unwrap(),
    );
    assert!(rst.str("text").contains("1 hour"));

    // Someone trying the app locally can follow the links from the log; the password stays out.
    let logged = logs.text();
    assert!(
        logged.contains("http://127.0.0.1:8080/invite?token=INV1"),
        "{logged}"
    );
    assert!(
        logged.contains("http://127.0.0.1:8080/reset?token=RST2"),
        "{logged}"
    );
    assert!(logged.contains(" INFO "), "{logged}");
    assert!(
        !logged.contains("Default-Pa55-xyz"),
        "password logged:\n{logged}"
    );
}

#[tokio::test]
async fn bad_input_is_the_callers_error_and_not_logged_as_delivery() {
    let root = tempfile::tempdir().unwrap();
    let mailer = Mailer::start(config(root.path())).unwrap();
    assert!(matches!(
        mailer.send_test("no-at-sign"),
        Err(Error::InvalidAddress { .. })
    ));
    assert!(matches!(
        mailer.send_invitation("a@example.org", "a", "pw", "javascript:alert(1)"),
        Err(Error::InvalidUrl { .. })
    ));
    assert!(matches!(
        mailer.send_password_reset("a@example.org", "a", "reset", Duration::from_secs(60)),
        Err(Error::InvalidUrl { .. })
    ));
    assert!(mailer.deliveries().is_empty());

    let id = mailer.send_test("ops@example.org").unwrap();
    let d = mailer
        .wait_for_outcome(id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Sent);
    assert_eq!(d.kind, MessageKind::Test);
    assert_eq!(emls(root.path()).len(), 1);
}

#[tokio::test]
async fn log_is_bounded_and_newest_first() {
    let root = tempfile::tempdir().unwrap();
    let mailer = Mailer::start(MailerConfig {
        log_capacity: 3,
        ..config(root.path())
    })
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(mailer.send_test(&format!("u{i}@example.org")).unwrap());
    }
    for id in &ids[2..] {
        mailer
            .wait_for_outcome(*id, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let log: Vec<_> = mailer.deliveries().iter().map(|d| d.id).collect();
    assert_eq!(log, vec![ids[4], ids[3], ids[2]]);
    // The first two may still be being written (deliveries run concurrently) and their log
    // entries are gone, so wait for their files rather than their outcomes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while emls(root.path()).len() < 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        emls(root.path()).len(),
        5,
        "eviction from the log does not drop mail"
    );
}

#[tokio::test]
async fn unusable_outbox_directory_fails_start() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Mailer::start(config(&file.join("outbox"))).unwrap_err();
    assert!(matches!(err, Error::Outbox { .. }), "{err}");
}
