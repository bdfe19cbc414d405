//! Delivery over SMTP to a real server process (aiosmtpd) on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns panic on broken fixtures

mod common;

use std::time::{Duration, Instant};

use common::{LogCapture, SmtpServer, closed_port, eventually, unescape};
use mailer::{
    DeliveryStatus, Error, Mailer, MailerConfig, MessageKind, RetryPolicy, Security, SmtpConfig,
    TransportConfig,
};

const WAIT: Duration = Duration::from_secs(20);

fn config(port: u16, retry: RetryPolicy) -> MailerConfig {
    MailerConfig {
        product_name: "Mask Detect".to_owned(),
        base_url: "https://masks.example.org".to_owned(),
        from: "Mask Detect <no-reply@masks.example.org>".to_owned(),
        transport: TransportConfig::Smtp(SmtpConfig {
            host: "127.0.0.1".to_owned(),
            port,
            security: Security::None,
            timeout: Duration::from_secs(5),
            ..SmtpConfig::default()
        }),
        retry,
        ..MailerConfig::default()
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        factor: 2,
    }
}

#[tokio::test]
async fn invitation_and_reset_arrive_with_both_parts_and_links() {
    let server = SmtpServer::start(&[]);
    let logs = LogCapture::start();
    let mailer = Mailer::start(config(server.port, fast_retry())).unwrap();
    mailer.verify().await.unwrap();

    let invite = mailer
        .send_invitation(
            "ada@example.org",
            "ada",
            "Default-Pa55-xyz",
            "https://masks.example.org/invite?token=INVITETOKEN123&x=1",
        )
        .unwrap();
    let reset = mailer
        .send_password_reset(
            "grace@example.org",
            "grace",
            "/reset?token=RESETTOKEN456",
            Duration::from_secs(30 * 60),
        )
        .unwrap();
    assert_ne!(invite, reset);

    for id in [invite, reset] {
        let d = mailer.wait_for_outcome(id, WAIT).await.expect("settled");
        assert_eq!(d.status, DeliveryStatus::Sent, "{d:?}");
        assert_eq!(d.attempts, 1);
    }

    let received = server.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    let by_rcpt = |addr: &str| {
        received
            .iter()
            .find(|r| r.rcpt_tos() == vec![addr.to_owned()])
            .unwrap_or_else(|| panic!("nothing for {addr}: {received:#?}"))
            .clone()
    };

    let inv = by_rcpt("ada@example.org");
    assert_eq!(inv.str("mail_from"), "no-reply@masks.example.org");
    assert_eq!(inv.str("subject"), "Your Mask Detect account");
    assert_eq!(inv.str("content_type"), "multipart/alternative");
    assert!(inv.str("from").contains("no-reply@masks.example.org"));
    assert!(inv.str("to").contains("ada@example.org"));
    let text = inv.str("text");
    assert!(text.contains("Username: ada"), "{text}");
    assert!(text.contains("Password: Default-Pa55-xyz"), "{text}");
    assert!(
        text.contains("https://masks.example.org/invite?token=INVITETOKEN123&x=1"),
        "{text}"
    );
    let html = inv.str("html");
    assert!(html.contains("Default-Pa55-xyz"), "{html}");
    assert!(!html.contains("&x=1"), "raw & in HTML: {html}");
    assert!(
        unescape(html)
            .contains(r#"href="https://masks.example.org/invite?token=INVITETOKEN123&x=1""#),
        "{html}"
    );

    let rst = by_rcpt("grace@example.org");
    assert_eq!(rst.str("subject"), "Reset your Mask Detect password");
    assert_eq!(rst.str("content_type"), "multipart/alternative");
    let text = rst.str("text");
    // The relative link is joined to the base URL.
    assert!(
        text.contains("https://masks.example.org/reset?token=RESETTOKEN456"),
        "{text}"
    );
    assert!(text.contains("30 minutes"), "{text}");
    assert!(text.contains("Hello grace"), "{text}");
    let html = rst.str("html");
    assert!(
        html.contains(r#"href="https://masks.example.org/reset?token=RESETTOKEN456""#),
        "{html}"
    );
    assert!(html.contains("30 minutes"));

    let log = mailer.deliveries();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].id, reset, "newest first");
    assert_eq!(log[0].kind, MessageKind::PasswordReset);
    assert_eq!(log[1].kind, MessageKind::Invitation);
    assert_eq!(log[1].to, "ada@example.org");

    // Nothing secret in the logs: not the default password, not the tokens in the links.
    let logged = logs.text();
    assert!(logged.contains("message sent"), "{logged}");
    for secret in ["Default-Pa55-xyz", "INVITETOKEN123", "RESETTOKEN456"] {
        assert!(!logged.contains(secret), "{secret} logged:\n{logged}");
    }
}

#[tokio::test]
async fn server_down_fails_after_all_retries() {
    let retry = fast_retry();
    let logs = LogCapture::start();
    let mailer = Mailer::start(config(closed_port(), retry)).unwrap();
    // Startup checks the connection in the background and logs a clear error, without failing.
    eventually(WAIT, "the startup check's error", || {
        let logged = logs.text();
        (logged.contains("ERROR") && logged.contains("cannot use the SMTP server")).then_some(())
    })
    .await;
    let err = mailer.verify().await.unwrap_err();
    assert!(matches!(err, Error::Smtp { .. }), "{err}");

    let started = Instant::now();
    let id = mailer.send_test("ops@example.org").unwrap();
    let d = mailer.wait_for_outcome(id, WAIT).await.expect("settled");
    let DeliveryStatus::Failed { reason } = &d.status else {
        panic!("expected Failed, got {d:?}");
    };
    assert!(!reason.is_empty());
    assert_eq!(d.attempts, 3);
    // Two waits between three attempts: 20 ms then 40 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(60),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn transient_reply_is_retried_then_sent() {
    let server = SmtpServer::start(&["--tempfail-count", "1"]);
    let retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(400),
        factor: 2,
    };
    let mailer = Mailer::start(config(server.port, retry)).unwrap();
    let id = mailer.send_test("ops@example.org").unwrap();

    // Between the attempts the admin page shows why the first one failed.
    let (attempt, reason) = eventually(WAIT, "Retrying status", || {
        match mailer.delivery(id)?.status {
            DeliveryStatus::Retrying { attempt, reason } => Some((attempt, reason)),
            _ => None,
        }
    })
    .await;
    assert_eq!(attempt, 1);
    assert!(reason.contains("451"), "{reason}");

    let d = mailer.wait_for_outcome(id, WAIT).await.expect("settled");
    assert_eq!(d.status, DeliveryStatus::Sent);
    assert_eq!(d.attempts, 2);
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].str("subject"), "Mask Detect test message");
    assert_eq!(received[0].rcpt_tos(), vec!["ops@example.org"]);
}

#[tokio::test]
async fn rejected_recipient_fails_at_once_with_the_servers_reply() {
    let server = SmtpServer::start(&["--reject-pattern", "^blocked@"]);
    let mailer = Mailer::start(config(server.port, fast_retry())).unwrap();

    let bad = mailer
        .send_invitation("blocked@example.org", "b", "pw-123456", "/invite?token=t")
        .unwrap();
    let good = mailer
        .send_invitation("fine@example.org", "f", "pw-123456", "/invite?token=t")
        .unwrap();

    let d = mailer.wait_for_outcome(bad, WAIT).await.expect("settled");
    let DeliveryStatus::Failed { reason } = &d.status else {
        panic!("expected Failed, got {d:?}");
    };
    assert!(reason.contains("550"), "{reason}");
    assert!(
        reason.contains("<blocked@example.org>: Recipient address rejected"),
        "{reason}"
    );
    assert_eq!(d.attempts, 1, "a permanent failure is not retried");

    let d = mailer.wait_for_outcome(good, WAIT).await.expect("settled");
    assert_eq!(d.status, DeliveryStatus::Sent);
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt_tos(), vec!["fine@example.org"]);
}

#[tokio::test]
async fn full_queue_is_an_error_not_a_drop() {
    // Nothing listens and retries are far apart: the one delivery slot stays busy, so the queue
    // (capacity 1) fills up.
    let config = MailerConfig {
        queue_capacity: 1,
        max_in_flight: 1,
        ..config(
            closed_port(),
            RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_secs(600),
                factor: 1,
            },
        )
    };
    let mailer = Mailer::start(config).unwrap();
    let mut queued = Vec::new();
    let err = loop {
        match mailer.send_test(&format!("u{}@example.org", queued.len())) {
            Ok(id) => queued.push(id),
            Err(e) => break e,
        }
        assert!(queued.len() <= 3, "queue never filled: {queued:?}");
        // Let the worker pick up the first message.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(matches!(err, Error::QueueFull { capacity: 1 }), "{err}");
    assert!(!queued.is_empty());
    // The refused message is not in the log; every queued one is, and none is Sent.
    let log = mailer.deliveries();
    assert_eq!(log.len(), queued.len(), "{log:?}");
    assert!(log.iter().all(|d| !d.status.is_final()), "{log:?}");
}

/// Self-signed certificate for 127.0.0.1 made with the openssl command.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl to make a test certificate");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

async fn tls_roundtrip(security: Security) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let mut args = vec!["--tls-cert", cert_s, "--tls-key", key_s];
    if security == Security::Tls {
        args.push("--implicit-tls");
    }
    let server = SmtpServer::start(&args);
    let mut config = config(server.port, fast_retry());
    let TransportConfig::Smtp(smtp) = &mut config.transport else {
        unreachable!()
    };
    smtp.security = security;
    smtp.extra_root_certificates = Some(cert.clone());
    let mailer = Mailer::start(config).unwrap();
    mailer.verify().await.unwrap();
    let id = mailer.send_test("tls@example.org").unwrap();
    let d = mailer.wait_for_outcome(id, WAIT).await.expect("settled");
    assert_eq!(d.status, DeliveryStatus::Sent, "{d:?}");
    assert_eq!(server.received()[0].rcpt_tos(), vec!["tls@example.org"]);
}

#[tokio::test]
async fn starttls_with_a_trusted_certificate() {
    tls_roundtrip(Security::Starttls).await;
}

#[tokio::test]
async fn implicit_tls_with_a_trusted_certificate() {
    tls_roundtrip(Security::Tls).await;
}

#[tokio::test]
async fn untrusted_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let server = SmtpServer::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--quiet", // the refused handshakes are expected
    ]);
    let mut config = config(server.port, fast_retry());
    let TransportConfig::Smtp(smtp) = &mut config.transport else {
        unreachable!()
    };
    smtp.security = Security::Starttls; // no extra root: the self-signed cert is not trusted
    let mailer = Mailer::start(config).unwrap();
    assert!(matches!(mailer.verify().await, Err(Error::Smtp { .. })));
    let id = mailer.send_test("tls@example.org").unwrap();
    let d = mailer.wait_for_outcome(id, WAIT).await.expect("settled");
    assert!(matches!(d.status, DeliveryStatus::Failed { .. }), "{d:?}");
    assert!(server.received().is_empty());
}
