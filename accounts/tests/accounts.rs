//! End-to-end behaviour of `Accounts` against real SQLite files with a manual clock.

// Fixture helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use accounts::{
    Accounts, AccountsConfig, AdminBootstrap, Error, ManualClock, NewUser, PageRequest,
    PasswordParams, Role, SessionId, TokenPurpose, User,
};
use tempfile::TempDir;

const SECRET: &[u8; 32] = b"test secret, exactly 32 bytes!!!";
const START: i64 = 1_700_000_000;
const MIN: Duration = Duration::from_secs(60);

struct Fixture {
    dir: TempDir,
    clock: ManualClock,
    accounts: Accounts,
}

fn config(clock: &ManualClock) -> AccountsConfig {
    AccountsConfig {
        clock: Arc::new(clock.clone()),
        ..AccountsConfig::with_secret(*SECRET)
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let accounts = Accounts::open(dir.path().join("accounts.db"), config(&clock)).unwrap();
    Fixture {
        dir,
        clock,
        accounts,
    }
}

fn add(accounts: &Accounts, name: &str, role: Role, password: &str) -> User {
    accounts
        .create_user(NewUser {
            username: name.into(),
            email: format!("{name}@example.com"),
            role,
            password: Some(password.into()),
        })
        .unwrap()
        .0
}

// ---- users ----------------------------------------------------------------------------------

#[test]
fn create_and_look_up_users() {
    let f = fixture();
    let alice = add(&f.accounts, "Alice", Role::User, "password-a");
    assert_eq!(alice.created_at, START);
    assert!(!alice.must_change_password);
    assert_eq!(alice.last_login_at, None);
    assert_eq!(f.accounts.user(alice.id).unwrap(), alice);
    assert_eq!(
        f.accounts.user_by_username("aLiCe").unwrap().unwrap().id,
        alice.id
    );
    assert_eq!(
        f.accounts
            .user_by_email("ALICE@example.COM")
            .unwrap()
            .unwrap()
            .id,
        alice.id
    );
    assert!(f.accounts.user_by_username("bob").unwrap().is_none());
    assert!(matches!(
        f.accounts.user(accounts::UserId(999)),
        Err(Error::NotFound { .. })
    ));

    let dup_name = f.accounts.create_user(NewUser {
        username: "ALICE".into(),
        email: "new@example.com".into(),
        role: Role::User,
        password: None,
    });
    assert!(
        matches!(dup_name, Err(Error::UsernameTaken { .. })),
        "{dup_name:?}"
    );
    let dup_email = f.accounts.create_user(NewUser {
        username: "alice2".into(),
        email: "Alice@Example.com".into(),
        role: Role::User,
        password: None,
    });
    assert!(
        matches!(dup_email, Err(Error::EmailTaken { .. })),
        "{dup_email:?}"
    );
}

#[test]
fn create_user_validates_input() {
    let f = fixture();
    let attempt = |username: &str, email: &str, password: Option<&str>| {
        f.accounts.create_user(NewUser {
            username: username.into(),
            email: email.into(),
            role: Role::User,
            password: password.map(Into::into),
        })
    };
    let field = |r: Result<(User, Option<String>), Error>| match r {
        Err(Error::Validation { field, .. }) => field,
        other => panic!("expected a validation error, got {other:?}"),
    };
    assert_eq!(
        field(attempt("bad name", "a@example.com", None)),
        "username"
    );
    assert_eq!(field(attempt("", "a@example.com", None)), "username");
    assert_eq!(field(attempt("ok", "not-an-email", None)), "email");
    assert_eq!(
        field(attempt("ok", "a@example.com", Some("short"))),
        "password"
    );
    assert_eq!(
        field(attempt(
            "Bobby.Tables",
            "a@example.com",
            Some("bobby.tables")
        )),
        "password"
    );
    assert_eq!(
        field(attempt("ok", "a@example.com", Some(&"x".repeat(1025)))),
        "password"
    );
    assert_eq!(
        f.accounts.list_users(PageRequest::default()).unwrap().total,
        0
    );
}

#[test]
fn generated_passwords_work_once_shown_and_force_a_change() {
    let f = fixture();
    let (user, generated) = f
        .accounts
        .create_user(NewUser {
            username: "gen".into(),
            email: "gen@example.com".into(),
            role: Role::User,
            password: None,
        })
        .unwrap();
    let generated = generated.unwrap();
    assert!(generated.len() >= 16);
    assert!(user.must_change_password);
    let (logged_in, session) = f.accounts.login("gen", &generated, "10.0.0.1").unwrap();
    assert!(logged_in.must_change_password);
    let changed = f
        .accounts
        .change_password(user.id, &generated, "my own password", Some(&session.id))
        .unwrap();
    assert!(!changed.must_change_password);
    assert_eq!(changed.password_version, user.password_version + 1);
}

#[test]
fn pagination() {
    let f = fixture();
    for i in 0..7 {
        add(&f.accounts, &format!("user{i}"), Role::User, "password-x");
    }
    let page = |page, per_page| {
        f.accounts
            .list_users(PageRequest { page, per_page })
            .unwrap()
    };
    let p1 = page(1, 3);
    assert_eq!(p1.total, 7);
    assert_eq!(p1.page_count(), 3);
    let names: Vec<_> = p1.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["user0", "user1", "user2"]);
    assert_eq!(page(3, 3).users.len(), 1);
    assert_eq!(page(3, 3).users[0].username, "user6");
    assert!(page(4, 3).users.is_empty());
    for bad in [
        PageRequest {
            page: 0,
            per_page: 3,
        },
        PageRequest {
            page: 1,
            per_page: 0,
        },
        PageRequest {
            page: 1,
            per_page: 501,
        },
    ] {
        assert!(matches!(
            f.accounts.list_users(bad),
            Err(Error::Validation { field: "page", .. })
        ));
    }
}

// ---- admin rules ----------------------------------------------------------------------------

#[test]
fn admin_bootstrap() {
    let f = fixture();
    let AdminBootstrap::Created {
        user,
        generated_password: Some(pw),
    } = f
        .accounts
        .ensure_admin("root", "root@example.com", None)
        .unwrap()
    else {
        panic!("expected a generated admin");
    };
    assert!(user.is_admin());
    assert!(user.must_change_password);
    f.accounts.login("root", &pw, "127.0.0.1").unwrap();
    // Second start: nothing happens, whatever is passed.
    assert_eq!(
        f.accounts
            .ensure_admin("other", "other@example.com", Some("whatever1".into()))
            .unwrap(),
        AdminBootstrap::Existing
    );
    assert_eq!(
        f.accounts.list_users(PageRequest::default()).unwrap().total,
        1
    );

    // With a given password, nothing is generated.
    let g = fixture();
    let created = g
        .accounts
        .ensure_admin("boss", "boss@example.com", Some("given password".into()))
        .unwrap();
    assert!(matches!(
        created,
        AdminBootstrap::Created { generated_password: None, ref user } if !user.must_change_password
    ));
    g.accounts
        .login("boss", "given password", "127.0.0.1")
        .unwrap();

    // An existing ordinary user is not promoted by name.
    let h = fixture();
    add(&h.accounts, "admin", Role::User, "password-u");
    assert!(matches!(
        h.accounts.ensure_admin("admin", "x@example.com", None),
        Err(Error::UsernameTaken { .. })
    ));
}

#[test]
fn last_admin_cannot_be_deleted_or_demoted() {
    let f = fixture();
    let a = add(&f.accounts, "a", Role::Admin, "password-a");
    assert!(matches!(
        f.accounts.delete_user(a.id),
        Err(Error::LastAdmin)
    ));
    assert!(matches!(
        f.accounts.set_role(a.id, Role::User),
        Err(Error::LastAdmin)
    ));
    // Setting the same role is fine.
    assert_eq!(
        f.accounts.set_role(a.id, Role::Admin).unwrap().role,
        Role::Admin
    );

    let b = add(&f.accounts, "b", Role::User, "password-b");
    assert!(f.accounts.set_role(b.id, Role::Admin).unwrap().is_admin());
    assert_eq!(
        f.accounts.set_role(a.id, Role::User).unwrap().role,
        Role::User
    );
    assert!(matches!(
        f.accounts.delete_user(b.id),
        Err(Error::LastAdmin)
    ));
    assert_eq!(f.accounts.delete_user(a.id).unwrap().user.id, a.id);
    assert!(f.accounts.user(b.id).unwrap().is_admin());
}

#[test]
fn concurrent_demotions_keep_one_admin() {
    let f = fixture();
    let admins: Vec<User> = (0..4)
        .map(|i| add(&f.accounts, &format!("admin{i}"), Role::Admin, "password-a"))
        .collect();
    let handles: Vec<_> = admins
        .iter()
        .map(|a| {
            let accounts = f.accounts.clone();
            let id = a.id;
            thread::spawn(move || accounts.set_role(id, Role::User))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    assert!(matches!(
        results.iter().find(|r| r.is_err()),
        Some(Err(Error::LastAdmin))
    ));
}

#[test]
fn delete_user_reports_and_removes_sessions() {
    let f = fixture();
    add(&f.accounts, "admin", Role::Admin, "password-a");
    let u = add(&f.accounts, "u", Role::User, "password-u");
    let (_, s1) = f.accounts.login("u", "password-u", "1.1.1.1").unwrap();
    let (_, s2) = f.accounts.login("u", "password-u", "1.1.1.1").unwrap();
    let deleted = f.accounts.delete_user(u.id).unwrap();
    assert_eq!(deleted.user.username, "u");
    assert_eq!(deleted.sessions_deleted, 2);
    for s in [s1, s2] {
        assert!(matches!(
            f.accounts.session(&s.id),
            Err(Error::SessionInvalid)
        ));
    }
    assert!(matches!(
        f.accounts.delete_user(u.id),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        f.accounts.login("u", "password-u", "1.1.1.1"),
        Err(Error::InvalidCredentials)
    ));
}

// ---- login and throttling -------------------------------------------------------------------

#[test]
fn login_checks_the_password() {
    let f = fixture();
    let u = add(&f.accounts, "carol", Role::User, "carol's password");
    f.clock.advance(MIN);
    let (user, session) = f
        .accounts
        .login("CAROL", "carol's password", "192.0.2.1")
        .unwrap();
    assert_eq!(user.id, u.id);
    assert_eq!(user.last_login_at, Some(START + 60));
    assert_eq!(
        f.accounts.user(u.id).unwrap().last_login_at,
        Some(START + 60)
    );
    assert_eq!(session.user_id, u.id);
    assert!(matches!(
        f.accounts.login("carol", "Carol's password", "192.0.2.1"),
        Err(Error::InvalidCredentials)
    ));
    assert!(matches!(
        f.accounts.login("nobody", "carol's password", "192.0.2.1"),
        Err(Error::InvalidCredentials)
    ));
}

#[test]
fn credential_check_starts_no_session_and_shares_the_login_throttle() {
    let f = fixture();
    let u = add(&f.accounts, "erin", Role::User, "erin's password");
    f.clock.advance(MIN);
    let user = f
        .accounts
        .check_credentials("erin", "erin's password", "192.0.2.7")
        .unwrap();
    assert_eq!(user.id, u.id);
    // Not a login: the last login time stays unset.
    assert_eq!(user.last_login_at, None);
    assert_eq!(f.accounts.user(u.id).unwrap().last_login_at, None);
    assert!(matches!(
        f.accounts
            .check_credentials("erin", "wrong password", "192.0.2.7"),
        Err(Error::InvalidCredentials)
    ));
    // Failures through the credential check count for the form login too, and back.
    for _ in 0..4 {
        let _ = f.accounts.login("erin", "wrong password", "192.0.2.8");
    }
    assert!(matches!(
        f.accounts
            .check_credentials("erin", "erin's password", "192.0.2.9"),
        Err(Error::Throttled { .. })
    ));
}

#[test]
fn username_throttle_refuses_even_the_right_password_until_the_window_passes() {
    let f = fixture();
    add(&f.accounts, "dave", Role::User, "dave's password");
    for i in 0..5 {
        // Different addresses: only the username counter reaches its limit.
        let r = f.accounts.login("dave", "wrong", &format!("10.0.0.{i}"));
        assert!(matches!(r, Err(Error::InvalidCredentials)), "{r:?}");
        f.clock.advance(MIN);
    }
    let r = f.accounts.login("dave", "dave's password", "10.9.9.9");
    let Err(Error::Throttled { retry_after }) = r else {
        panic!("expected throttling, got {r:?}")
    };
    // The first failure was 5 minutes ago and leaves the 15-minute window in 10.
    assert_eq!(retry_after, Duration::from_secs(10 * 60));
    assert_eq!(
        Error::Throttled { retry_after }.to_string(),
        "too many failed attempts, try again later"
    );
    // Other users are unaffected.
    add(&f.accounts, "erin", Role::User, "erin's password");
    f.accounts
        .login("erin", "erin's password", "10.9.9.9")
        .unwrap();

    f.clock.advance(retry_after);
    f.accounts
        .login("dave", "dave's password", "10.9.9.9")
        .unwrap();
}

#[test]
fn success_resets_the_username_counter() {
    let f = fixture();
    add(&f.accounts, "frank", Role::User, "frank's password");
    for _ in 0..4 {
        assert!(f.accounts.login("frank", "wrong", "10.0.0.1").is_err());
    }
    f.accounts
        .login("frank", "frank's password", "10.0.0.1")
        .unwrap();
    for _ in 0..4 {
        assert!(matches!(
            f.accounts.login("frank", "wrong", "10.0.0.1"),
            Err(Error::InvalidCredentials)
        ));
    }
    f.accounts
        .login("frank", "frank's password", "10.0.0.1")
        .unwrap();
}

#[test]
fn address_throttle_spans_usernames() {
    let f = fixture();
    add(&f.accounts, "grace", Role::User, "grace's password");
    for i in 0..20 {
        let r = f
            .accounts
            .login(&format!("guess{i}"), "wrong", "198.51.100.7");
        assert!(matches!(r, Err(Error::InvalidCredentials)), "{i}: {r:?}");
    }
    assert!(matches!(
        f.accounts
            .login("grace", "grace's password", "198.51.100.7"),
        Err(Error::Throttled { .. })
    ));
    // Another address is fine.
    f.accounts
        .login("grace", "grace's password", "198.51.100.8")
        .unwrap();
    f.clock.advance(15 * MIN);
    f.accounts
        .login("grace", "grace's password", "198.51.100.7")
        .unwrap();
}

#[test]
fn unknown_usernames_look_like_known_ones() {
    let f = fixture();
    add(&f.accounts, "heidi", Role::User, "heidi's password");
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for (name, times) in [("heidi", &mut known), ("ghost", &mut unknown)] {
        for i in 0..5 {
            let start = Instant::now();
            let r = f.accounts.login(name, "wrong", &format!("10.1.{i}.1"));
            times.push(start.elapsed());
            assert_eq!(r.unwrap_err().to_string(), "invalid username or password");
        }
        // Both are throttled after 5 failures, with the same message.
        let r = f.accounts.login(name, "whatever", "10.2.0.1");
        assert!(matches!(r, Err(Error::Throttled { .. })), "{name}: {r:?}");
    }
    // Not a benchmark: only that the unknown-user path also pays for an argon2 verification
    // rather than returning in microseconds.
    let min_known = known.iter().min().unwrap();
    let min_unknown = unknown.iter().min().unwrap();
    assert!(
        *min_unknown * 4 >= *min_known,
        "unknown {min_unknown:?} vs known {min_known:?}"
    );
}

#[test]
fn concurrent_logins_from_threads() {
    let f = fixture();
    let users: Vec<User> = (0..4)
        .map(|i| {
            add(
                &f.accounts,
                &format!("t{i}"),
                Role::User,
                &format!("password-{i}"),
            )
        })
        .collect();
    let handles: Vec<_> = (0..16)
        .map(|n| {
            let accounts = f.accounts.clone();
            thread::spawn(move || {
                let i = n % 4;
                let (user, session) = accounts
                    .login(
                        &format!("t{i}"),
                        &format!("password-{i}"),
                        &format!("10.3.0.{n}"),
                    )
                    .unwrap();
                let wrong = accounts.login(&format!("t{i}"), "nope nope", "10.4.0.1");
                assert!(matches!(wrong, Err(Error::InvalidCredentials)), "{wrong:?}");
                let (again, _) = accounts.session(&session.id).unwrap();
                assert_eq!(again.id, user.id);
                (user.id, session.id)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ids: std::collections::HashSet<_> =
        results.iter().map(|(_, s)| s.as_str().to_owned()).collect();
    assert_eq!(ids.len(), 16, "every login gets its own session");
    for (i, user) in users.iter().enumerate() {
        assert_eq!(
            results.iter().filter(|(u, _)| *u == user.id).count(),
            4,
            "user {i}"
        );
    }
}

#[test]
fn passwords_are_rehashed_when_parameters_change() {
    let f = fixture();
    let db = f.dir.path().join("accounts.db");
    let weak = Accounts::open(
        &db,
        AccountsConfig {
            password_params: PasswordParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            ..config(&f.clock)
        },
    )
    .unwrap();
    let u = add(&weak, "ivan", Role::User, "ivan's password");
    let stored = || -> String { rusqlite_hash(&db, u.id.0) };
    assert!(stored().starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
    f.accounts
        .login("ivan", "wrong password", "10.0.0.1")
        .unwrap_err();
    assert!(
        stored().starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
        "only on success"
    );
    f.accounts
        .login("ivan", "ivan's password", "10.0.0.1")
        .unwrap();
    assert!(
        stored().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        stored()
    );
    // A re-hash is not a password change: outstanding tokens stay valid.
    assert_eq!(
        f.accounts.user(u.id).unwrap().password_version,
        u.password_version
    );
    f.accounts
        .login("ivan", "ivan's password", "10.0.0.1")
        .unwrap();
}

fn rusqlite_hash(db: &std::path::Path, id: i64) -> String {
    // Read the stored column directly: the public API never exposes hashes.
    let conn = rusqlite_open(db);
    conn.query_row("SELECT password_hash FROM users WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .unwrap()
}

fn rusqlite_open(db: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(db).unwrap()
}

// ---- sessions -------------------------------------------------------------------------------

#[test]
fn session_ids_are_stored_hashed() {
    let f = fixture();
    add(&f.accounts, "judy", Role::User, "judy's password");
    let (_, session) = f
        .accounts
        .login("judy", "judy's password", "10.0.0.1")
        .unwrap();
    assert_eq!(session.id.as_str().len(), 64);
    assert_eq!(session.csrf_token.len(), 64);
    assert!(!format!("{session:?}").contains(session.id.as_str()));
    let conn = rusqlite_open(&f.dir.path().join("accounts.db"));
    let stored: Vec<String> = conn
        .prepare("SELECT id_hash FROM sessions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored, [session.id.hash()]);
    assert_ne!(stored[0], session.id.as_str());
    // Presenting the stored hash as a cookie does not work.
    assert!(matches!(
        f.accounts.session(&SessionId::new(stored[0].clone())),
        Err(Error::SessionInvalid)
    ));
}

#[test]
fn idle_timeout_and_touching() {
    let f = fixture();
    add(&f.accounts, "kim", Role::User, "kim's password");
    let (_, s) = f
        .accounts
        .login("kim", "kim's password", "10.0.0.1")
        .unwrap();
    assert_eq!(s.idle_expires_at, START + 30 * 60);
    assert_eq!(s.expires_at, START + 12 * 3600);
    // Each use within 30 minutes extends the idle deadline.
    for step in 1..=4 {
        f.clock.advance(29 * MIN);
        let (_, seen) = f.accounts.session(&s.id).unwrap();
        assert_eq!(seen.last_seen_at, START + step * 29 * 60);
        assert_eq!(seen.csrf_token, s.csrf_token);
    }
    f.clock.advance(30 * MIN);
    assert!(matches!(
        f.accounts.session(&s.id),
        Err(Error::SessionInvalid)
    ));
    // And it is gone for good, not just refused.
    f.clock.set(START);
    assert!(matches!(
        f.accounts.session(&s.id),
        Err(Error::SessionInvalid)
    ));
}

#[test]
fn absolute_lifetime_ends_busy_sessions() {
    let f = fixture();
    add(&f.accounts, "leo", Role::User, "leo's password");
    let (_, s) = f
        .accounts
        .login("leo", "leo's password", "10.0.0.1")
        .unwrap();
    let mut elapsed = 0;
    while elapsed + 20 < 12 * 60 {
        f.clock.advance(20 * MIN);
        elapsed += 20;
        f.accounts.session(&s.id).unwrap();
    }
    // 11h40 in; the idle deadline is capped at the absolute one.
    let (_, seen) = f.accounts.session(&s.id).unwrap();
    assert_eq!(seen.idle_expires_at, s.expires_at);
    f.clock.advance(20 * MIN);
    assert!(matches!(
        f.accounts.session(&s.id),
        Err(Error::SessionInvalid)
    ));
}

#[test]
fn logout_and_csrf() {
    let f = fixture();
    add(&f.accounts, "mia", Role::User, "mia's password");
    let (_, a) = f
        .accounts
        .login("mia", "mia's password", "10.0.0.1")
        .unwrap();
    let (_, b) = f
        .accounts
        .login("mia", "mia's password", "10.0.0.1")
        .unwrap();
    assert_ne!(a.csrf_token, b.csrf_token);
    assert!(a.csrf_matches(&a.csrf_token));
    assert!(!a.csrf_matches(&b.csrf_token));
    assert!(f.accounts.logout(&a.id).unwrap());
    assert!(!f.accounts.logout(&a.id).unwrap());
    assert!(matches!(
        f.accounts.session(&a.id),
        Err(Error::SessionInvalid)
    ));
    f.accounts.session(&b.id).unwrap();
    assert!(matches!(
        f.accounts.session(&SessionId::new("garbage")),
        Err(Error::SessionInvalid)
    ));
}

#[test]
fn purge_expired_sessions() {
    let f = fixture();
    add(&f.accounts, "ned", Role::User, "ned's password");
    f.accounts
        .login("ned", "ned's password", "10.0.0.1")
        .unwrap();
    f.clock.advance(10 * MIN);
    let (_, fresh) = f
        .accounts
        .login("ned", "ned's password", "10.0.0.1")
        .unwrap();
    f.clock.advance(25 * MIN);
    assert_eq!(f.accounts.purge_expired_sessions().unwrap(), 1);
    f.accounts.session(&fresh.id).unwrap();
}

// ---- passwords ------------------------------------------------------------------------------

#[test]
fn change_password_keeps_only_the_current_session() {
    let f = fixture();
    let u = add(&f.accounts, "olga", Role::User, "old password");
    let (_, here) = f
        .accounts
        .login("olga", "old password", "10.0.0.1")
        .unwrap();
    let (_, elsewhere) = f
        .accounts
        .login("olga", "old password", "10.0.0.2")
        .unwrap();
    assert!(matches!(
        f.accounts
            .change_password(u.id, "not the password", "new password", Some(&here.id)),
        Err(Error::InvalidCredentials)
    ));
    assert!(matches!(
        f.accounts
            .change_password(u.id, "old password", "olga", Some(&here.id)),
        Err(Error::Validation {
            field: "password",
            ..
        })
    ));
    f.accounts
        .change_password(u.id, "old password", "new password", Some(&here.id))
        .unwrap();
    f.accounts.session(&here.id).unwrap();
    assert!(matches!(
        f.accounts.session(&elsewhere.id),
        Err(Error::SessionInvalid)
    ));
    assert!(
        f.accounts
            .login("olga", "old password", "10.0.0.3")
            .is_err()
    );
    f.accounts
        .login("olga", "new password", "10.0.0.3")
        .unwrap();
}

#[test]
fn admin_set_password_logs_the_user_out() {
    let f = fixture();
    let u = add(&f.accounts, "pat", Role::User, "pat's password");
    let (_, s) = f
        .accounts
        .login("pat", "pat's password", "10.0.0.1")
        .unwrap();
    let generated = f.accounts.set_password(u.id, None).unwrap().unwrap();
    assert!(matches!(
        f.accounts.session(&s.id),
        Err(Error::SessionInvalid)
    ));
    let (user, _) = f.accounts.login("pat", &generated, "10.0.0.1").unwrap();
    assert!(user.must_change_password);
    assert_eq!(
        f.accounts
            .set_password(u.id, Some("chosen by admin".into()))
            .unwrap(),
        None
    );
    f.accounts
        .login("pat", "chosen by admin", "10.0.0.1")
        .unwrap();
}

// ---- tokens ---------------------------------------------------------------------------------

#[test]
fn reset_token_round_trip_and_single_use() {
    let f = fixture();
    let u = add(&f.accounts, "quinn", Role::User, "forgotten pw");
    let (_, s) = f
        .accounts
        .login("quinn", "forgotten pw", "10.0.0.1")
        .unwrap();
    assert!(
        f.accounts
            .issue_reset_token("nobody@example.com")
            .unwrap()
            .is_none()
    );
    let (who, token) = f
        .accounts
        .issue_reset_token("QUINN@example.com")
        .unwrap()
        .unwrap();
    assert_eq!(who.id, u.id);
    assert_eq!(
        f.accounts
            .verify_token(TokenPurpose::Reset, &token)
            .unwrap()
            .id,
        u.id
    );
    let user = f
        .accounts
        .set_password_with_token(TokenPurpose::Reset, &token, "remembered pw")
        .unwrap();
    assert_eq!(user.password_version, u.password_version + 1);
    assert!(matches!(
        f.accounts.session(&s.id),
        Err(Error::SessionInvalid)
    ));
    f.accounts
        .login("quinn", "remembered pw", "10.0.0.1")
        .unwrap();

    // Used twice.
    assert!(matches!(
        f.accounts
            .set_password_with_token(TokenPurpose::Reset, &token, "third password"),
        Err(Error::TokenUsed)
    ));
    assert!(matches!(
        f.accounts.verify_token(TokenPurpose::Reset, &token),
        Err(Error::TokenUsed)
    ));
    f.accounts
        .login("quinn", "remembered pw", "10.0.0.1")
        .unwrap();
}

#[test]
fn token_after_a_password_change_is_refused() {
    let f = fixture();
    let u = add(&f.accounts, "rita", Role::User, "first password");
    let (_, token) = f
        .accounts
        .issue_reset_token("rita@example.com")
        .unwrap()
        .unwrap();
    f.accounts
        .change_password(u.id, "first password", "second password", None)
        .unwrap();
    assert!(matches!(
        f.accounts
            .set_password_with_token(TokenPurpose::Reset, &token, "attacker's pw"),
        Err(Error::TokenUsed)
    ));
    f.accounts
        .login("rita", "second password", "10.0.0.1")
        .unwrap();
}

#[test]
fn token_errors_are_distinct() {
    let f = fixture();
    let u = add(&f.accounts, "sam", Role::User, "sam's password");
    let (_, reset) = f
        .accounts
        .issue_reset_token("sam@example.com")
        .unwrap()
        .unwrap();
    let invite = f.accounts.issue_invite_token(u.id).unwrap();

    // Wrong purpose, both ways.
    assert!(matches!(
        f.accounts
            .set_password_with_token(TokenPurpose::Invite, &reset, "new password"),
        Err(Error::TokenWrongPurpose {
            expected: TokenPurpose::Invite,
            found: TokenPurpose::Reset
        })
    ));
    assert!(matches!(
        f.accounts.verify_token(TokenPurpose::Reset, &invite),
        Err(Error::TokenWrongPurpose {
            expected: TokenPurpose::Reset,
            found: TokenPurpose::Invite
        })
    ));
    // Nor is a token a session id.
    assert!(matches!(
        f.accounts.session(&SessionId::new(reset.clone())),
        Err(Error::SessionInvalid)
    ));

    // Tampered: change one character of the payload, or of the signature.
    let mut parts: Vec<String> = reset.split('.').map(str::to_owned).collect();
    let flip = |s: &mut String, at: usize| {
        let c = s.as_bytes()[at];
        let replacement = if c == b'A' { 'B' } else { 'A' };
        s.replace_range(at..=at, &replacement.to_string());
    };
    let mut payload = parts.clone();
    flip(&mut payload[1], 5);
    flip(&mut parts[2], 3);
    for forged in [
        payload.join("."),
        parts.join("."),
        "x.y.z".to_owned(),
        String::new(),
    ] {
        assert!(
            matches!(
                f.accounts.verify_token(TokenPurpose::Reset, &forged),
                Err(Error::TokenInvalid)
            ),
            "{forged}"
        );
    }
    // Signed with another secret.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Accounts::open(
        other_dir.path().join("other.db"),
        AccountsConfig {
            clock: Arc::new(f.clock.clone()),
            ..AccountsConfig::with_secret(*b"a different secret of 32 bytes!!")
        },
    )
    .unwrap();
    add(&other, "sam", Role::User, "sam's password");
    let (_, foreign) = other.issue_reset_token("sam@example.com").unwrap().unwrap();
    assert!(matches!(
        f.accounts.verify_token(TokenPurpose::Reset, &foreign),
        Err(Error::TokenInvalid)
    ));

    // Expired: reset after 10 minutes, invitation after 72 hours.
    f.clock.advance(10 * MIN - Duration::from_secs(1));
    f.accounts
        .verify_token(TokenPurpose::Reset, &reset)
        .unwrap();
    f.clock.advance(Duration::from_secs(1));
    assert!(matches!(
        f.accounts
            .set_password_with_token(TokenPurpose::Reset, &reset, "new password"),
        Err(Error::TokenExpired)
    ));
    f.clock
        .advance(72 * 60 * MIN - 10 * MIN - Duration::from_secs(1));
    f.accounts
        .verify_token(TokenPurpose::Invite, &invite)
        .unwrap();
    f.clock.advance(Duration::from_secs(1));
    assert!(matches!(
        f.accounts.verify_token(TokenPurpose::Invite, &invite),
        Err(Error::TokenExpired)
    ));
}

#[test]
fn token_of_a_deleted_user_is_invalid() {
    let f = fixture();
    add(&f.accounts, "admin", Role::Admin, "admin password");
    let u = add(&f.accounts, "tom", Role::User, "tom's password");
    let invite = f.accounts.issue_invite_token(u.id).unwrap();
    f.accounts.delete_user(u.id).unwrap();
    assert!(matches!(
        f.accounts
            .set_password_with_token(TokenPurpose::Invite, &invite, "new password"),
        Err(Error::TokenInvalid)
    ));
}

#[test]
fn simultaneous_uses_of_one_token_succeed_once() {
    let f = fixture();
    let u = add(&f.accounts, "uma", Role::User, "uma's password");
    let invite = f.accounts.issue_invite_token(u.id).unwrap();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let accounts = f.accounts.clone();
            let invite = invite.clone();
            thread::spawn(move || {
                accounts.set_password_with_token(
                    TokenPurpose::Invite,
                    &invite,
                    &format!("racing password {i}"),
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, Error::TokenUsed))
    );
    assert_eq!(
        f.accounts.user(u.id).unwrap().password_version,
        u.password_version + 1
    );
}

// ---- opening --------------------------------------------------------------------------------

#[test]
fn open_validates_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let short = Accounts::open(&db, AccountsConfig::with_secret(*b"too short"));
    assert!(matches!(short, Err(Error::Config { .. })), "{short:?}");
    assert!(matches!(
        Accounts::open(&db, AccountsConfig::default()),
        Err(Error::Config { .. })
    ));
    let zero_idle = AccountsConfig {
        session_idle_timeout: Duration::ZERO,
        ..AccountsConfig::with_secret(*SECRET)
    };
    assert!(matches!(
        Accounts::open(&db, zero_idle),
        Err(Error::Config { .. })
    ));
    let debug = format!("{:?}", AccountsConfig::with_secret(*SECRET));
    assert!(!debug.contains("test secret"), "{debug}");
}

#[test]
fn open_migrates_an_empty_file_and_refuses_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("empty.db");
    std::fs::File::create(&db).unwrap();
    let clock = ManualClock::new(START);
    let accounts = Accounts::open(&db, config(&clock)).unwrap();
    add(&accounts, "vic", Role::User, "vic's password");
    drop(accounts);
    // Reopening keeps the data.
    let accounts = Accounts::open(&db, config(&clock)).unwrap();
    accounts.login("vic", "vic's password", "10.0.0.1").unwrap();
    drop(accounts);

    let conn = rusqlite_open(&db);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, accounts::store::SCHEMA_VERSION);
    conn.pragma_update(None, "user_version", version + 1)
        .unwrap();
    drop(conn);
    assert!(matches!(
        Accounts::open(&db, config(&clock)),
        Err(Error::SchemaTooNew { .. })
    ));
}

#[test]
fn accounts_is_send_sync_and_clone() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Accounts>();
    assert_traits::<accounts::Session>();
    assert_traits::<User>();
}
