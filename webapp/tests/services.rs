//! The service layer called directly (no HTTP), against the real libraries: real SQLite files,
//! the real SMTP server process, the real models on real photos.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use accounts::{Role, TokenPurpose, UserId};
use common::*;
use history_store::Source;
use webapp::services::{self, ServiceError};

fn token_of(link: &str) -> String {
    link.split("token=").nth(1).unwrap().to_string()
}

#[tokio::test]
async fn invitations_create_the_user_and_send_a_working_link() {
    let s = server().await;
    let app = s.app.clone();
    let invited = tokio::task::spawn_blocking(move || {
        services::invite_user(&app, "nina", "nina@example.com", Role::User)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(invited.mail_queued);
    assert!(invited.user.must_change_password);
    let first = s.smtp.wait_for("nina@example.com", 0).await;
    let token = token_of(&link(&first, "/password/reset"));
    let app = s.app.clone();
    let id = invited.user.id;
    let purpose = tokio::task::spawn_blocking(move || {
        let p = services::check_link(&app, &token)?;
        services::resend_invitation(&app, id)?;
        Ok::<_, ServiceError>(p)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(purpose, TokenPurpose::Invite);
    let second = s.smtp.wait_for("nina@example.com", 1).await;
    let token = token_of(&link(&second, "/password/reset"));
    let app = s.app.clone();
    tokio::task::spawn_blocking(move || {
        services::use_link(&app, &token, "nina-chose-this-password").unwrap();
        // Single use.
        assert!(matches!(
            services::use_link(&app, &token, "nina-again-password"),
            Err(ServiceError::Accounts(accounts::Error::TokenUsed))
        ));
        assert!(
            app.accounts
                .check_credentials("nina", "nina-chose-this-password", "192.0.2.1")
                .is_ok()
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn reset_requests_answer_alike_and_mail_only_real_accounts() {
    let s = server().await;
    let app = s.app.clone();
    tokio::task::spawn_blocking(move || {
        services::request_password_reset(&app, "nobody@example.com").unwrap();
        services::request_password_reset(&app, "admin@example.com").unwrap();
    })
    .await
    .unwrap();
    let m = s.smtp.wait_for("admin@example.com", 0).await;
    assert!(link(&m, "/password/reset").contains("token="));
    assert!(
        s.smtp
            .messages()
            .iter()
            .all(|m| !m.to_string().contains("nobody@example.com"))
    );
}

#[tokio::test]
async fn deleting_a_user_removes_their_history_and_refuses_the_last_admin() {
    let s = server().await;
    let photo = photo("maksssksksss0.png");
    let app = s.app.clone();
    tokio::task::spawn_blocking(move || {
        let user = services::register(&app, "olga", "olga-password", None).unwrap();
        let (entry, detection) = services::record_detection(
            &app,
            user.id,
            photo,
            Some("street.png".into()),
            Source::File,
        )
        .unwrap();
        assert!(detection.num_faces > 0);
        assert_eq!(entry.category, detection.category);
        let owner = history_store::UserId(user.id.0);
        assert_eq!(app.history.counts(owner).unwrap().total(), 1);
        assert_eq!(services::delete_user(&app, user.id).unwrap(), 1);
        assert_eq!(app.history.counts(owner).unwrap().total(), 0);
        assert!(matches!(
            services::delete_user(&app, user.id),
            Err(ServiceError::Accounts(accounts::Error::NotFound { .. }))
        ));
        assert!(matches!(
            services::delete_user(&app, UserId(1)),
            Err(ServiceError::Accounts(accounts::Error::LastAdmin))
        ));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn api_registration_works_for_every_valid_user_name() {
    let s = server().await;
    let app = s.app.clone();
    tokio::task::spawn_blocking(move || {
        // Names that are valid but would make an invalid `name@...` address.
        for name in [".ann", "bob.", "c..d", "-e-"] {
            let user = services::register(&app, name, "a-long-enough-password", None)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(user.email.ends_with("@users.invalid"), "{}", user.email);
        }
        // An invalid name is refused for the name, never for an email field nobody sent.
        match services::register(&app, "no spaces", "a-long-enough-password", None) {
            Err(ServiceError::Accounts(accounts::Error::Validation { field, .. })) => {
                assert_eq!(field, "username")
            }
            other => panic!("{other:?}"),
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn maintenance_purges_expired_sessions_and_uploads_past_retention() {
    let s = server_with(|c| c.history.retention_days = 7).await;
    let photo = photo("maksssksksss1.png");
    let app = s.app.clone();
    tokio::task::spawn_blocking(move || {
        let user = services::register(&app, "pia", "pia-password-long", None).unwrap();
        services::record_detection(&app, user.id, photo, None, Source::File).unwrap();
        app.accounts
            .login("pia", "pia-password-long", "192.0.2.1")
            .unwrap();
    })
    .await
    .unwrap();
    let app = s.app.clone();
    let nothing = tokio::task::spawn_blocking(move || webapp::jobs::run_once(&app))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(nothing, webapp::jobs::Maintenance::default());
    // Eight days later: the session and the upload are both past their time.
    s.clock.advance(Duration::from_secs(8 * 86_400));
    s.history_clock.advance_ms(8 * 86_400 * 1000);
    let app = s.app.clone();
    let done = tokio::task::spawn_blocking(move || webapp::jobs::run_once(&app))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.uploads, 1);
    assert!(done.sessions >= 1, "{done:?}");
}

#[tokio::test]
async fn health_pings_every_database() {
    let s = server().await;
    let app = s.app.clone();
    let ok = tokio::task::spawn_blocking(move || services::health(&app))
        .await
        .unwrap();
    assert_eq!(ok, Ok(()));
    // With the history's directory gone, the check names the store.
    std::fs::rename(
        s.data.path().join("history"),
        s.data.path().join("history-moved"),
    )
    .unwrap();
    let app = s.app.clone();
    let failed = tokio::task::spawn_blocking(move || services::health(&app))
        .await
        .unwrap();
    assert!(failed.unwrap_err().contains("history"));
}
