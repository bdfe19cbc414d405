//! End-to-end behaviour of `Accounts` with a manual clock, run once per storage backend: the
//! `sqlite` module on real SQLite files, the `postgres` module on a fresh database of the
//! PostgreSQL server named by `MASK_TEST_POSTGRES` (which `make test` starts through
//! `webapp/test_support/services.py`; without it those tests print SKIPPED and return).

// Fixture helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use accounts::{
    Accounts, AccountsConfig, AdminBootstrap, Error, ManualClock, NewUser, PageRequest,
    PasswordParams, Role, SessionId, TokenPurpose, User,
};
use accounts::{PgPool, PgStore};
use tempfile::TempDir;

const SECRET: &[u8; 32] = b"test secret, exactly 32 bytes!!!";
const START: i64 = 1_700_000_000;
const MIN: Duration = Duration::from_secs(60);

/// The storage a fixture runs on.
enum Backend {
    Sqlite,
    /// The server's URL (any database; each fixture creates its own).
    Postgres(String),
}

/// Where one fixture's data lives, and how to look at it behind the API's back.
enum Db {
    Sqlite(TempDir),
    Postgres(PgPool),
}

struct Fixture {
    db: Db,
    clock: ManualClock,
    accounts: Accounts,
}

fn config(clock: &ManualClock) -> AccountsConfig {
    AccountsConfig {
        clock: Arc::new(clock.clone()),
        ..AccountsConfig::with_secret(*SECRET)
    }
}

fn fixture(b: &Backend) -> Fixture {
    let clock = ManualClock::new(START);
    fixture_with(b, config(&clock), clock)
}

fn fixture_with(b: &Backend, config: AccountsConfig, clock: ManualClock) -> Fixture {
    let db = match b {
        Backend::Sqlite => Db::Sqlite(tempfile::tempdir().unwrap()),
        Backend::Postgres(url) => Db::Postgres(fresh_database(url)),
    };
    let accounts = open_on(&db, config);
    Fixture {
        db,
        clock,
        accounts,
    }
}

/// Another `Accounts` on the same data (as a second process or instance would be).
fn open_on(db: &Db, config: AccountsConfig) -> Accounts {
    match db {
        Db::Sqlite(dir) => Accounts::open(dir.path().join("accounts.db"), config).unwrap(),
        Db::Postgres(pool) => {
            let store = PgStore::open(pool.clone()).unwrap();
            Accounts::with_store(Arc::new(store), config).unwrap()
        }
    }
}

/// A new database on the server at `url`, and a pool connected to it.
fn fresh_database(url: &str) -> PgPool {
    let url = pg_pool::testing::scratch_database(url, "accounts").unwrap();
    PgPool::connect(&url, 8).unwrap()
}

impl Fixture {
    /// One text column of every row `sql` returns, read directly from the database.
    fn column(&self, sql: &str) -> Vec<String> {
        match &self.db {
            Db::Sqlite(dir) => rusqlite::Connection::open(dir.path().join("accounts.db"))
                .unwrap()
                .prepare(sql)
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
            Db::Postgres(pool) => {
                let sql = sql.to_owned();
                pool.run("read a column", move |client| async move {
                    let rows = client.query(&sql, &[]).await?;
                    Ok::<_, pg_pool::Error>(rows.iter().map(|r| r.get(0)).collect())
                })
                .unwrap()
            }
        }
    }
}

impl Backend {
    fn postgres() -> Option<Backend> {
        match std::env::var("MASK_TEST_POSTGRES") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ => {
                eprintln!(
                    "SKIPPED: MASK_TEST_POSTGRES is not set (make test starts a PostgreSQL \
                     server through webapp/test_support/services.py)"
                );
                None
            }
        }
    }
}

/// Runs each named behaviour test once per backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(&super::Backend::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $name() {
                if let Some(b) = super::Backend::postgres() { super::$name(&b) }
            })*
        }
    };
}

on_every_backend!(
    create_and_look_up_users,
    create_user_validates_input,
    generated_passwords_work_once_shown_and_force_a_change,
    pagination,
    admin_bootstrap,
    last_admin_cannot_be_deleted_or_demoted,
    concurrent_demotions_keep_one_admin,
    delete_user_reports_and_removes_sessions,
    login_checks_the_password,
    credential_check_starts_no_session_and_shares_the_login_throttle,
    username_throttle_refuses_even_the_right_password_until_the_window_passes,
    success_resets_the_username_counter,
    address_throttle_spans_usernames,
    unknown_usernames_look_like_known_ones,
    concurrent_logins_from_threads,
    passwords_are_rehashed_when_parameters_change,
    session_ids_are_stored_hashed,
    idle_timeout_and_touching,
    absolute_lifetime_ends_busy_sessions,
    logout_and_csrf,
    purge_expired_sessions,
    change_password_keeps_only_the_current_session,
    admin_set_password_logs_the_user_out,
    reset_token_round_trip_and_single_use,
    token_after_a_password_change_is_refused,
    token_errors_are_distinct,
    token_of_a_deleted_user_is_invalid,
    simultaneous_uses_of_one_token_succeed_once,
);

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

fn create_and_look_up_users(b: &Backend) {
    let f = fixture(b);
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

fn create_user_validates_input(b: &Backend) {
    let f = fixture(b);
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

fn generated_passwords_work_once_shown_and_force_a_change(b: &Backend) {
    let f = fixture(b);
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

fn pagination(b: &Backend) {
    let f = fixture(b);
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

fn admin_bootstrap(b: &Backend) {
    let f = fixture(b);
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
    let g = fixture(b);
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
    let h = fixture(b);
    add(&h.accounts, "admin", Role::User, "password-u");
    assert!(matches!(
        h.accounts.ensure_admin("admin", "x@example.com", None),
        Err(Error::UsernameTaken { .. })
    ));
}

fn last_admin_cannot_be_deleted_or_demoted(b: &Backend) {
    let f = fixture(b);
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

fn concurrent_demotions_keep_one_admin(b: &Backend) {
    let f = fixture(b);
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

fn delete_user_reports_and_removes_sessions(b: &Backend) {
    let f = fixture(b);
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

fn login_checks_the_password(b: &Backend) {
    let f = fixture(b);
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

fn credential_check_starts_no_session_and_shares_the_login_throttle(b: &Backend) {
    let f = fixture(b);
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

fn username_throttle_refuses_even_the_right_password_until_the_window_passes(b: &Backend) {
    let f = fixture(b);
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

fn success_resets_the_username_counter(b: &Backend) {
    let f = fixture(b);
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

fn address_throttle_spans_usernames(b: &Backend) {
    let f = fixture(b);
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

fn unknown_usernames_look_like_known_ones(b: &Backend) {
    let f = fixture(b);
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

fn concurrent_logins_from_threads(b: &Backend) {
    let f = fixture(b);
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

fn passwords_are_rehashed_when_parameters_change(b: &Backend) {
    let f = fixture(b);
    let weak = open_on(
        &f.db,
        AccountsConfig {
            password_params: PasswordParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            ..config(&f.clock)
        },
    );
    let u = add(&weak, "ivan", Role::User, "ivan's password");
    // Read the stored column directly: the public API never exposes hashes.
    let stored = || -> String {
        f.column(&format!(
            "SELECT password_hash FROM users WHERE id = {}",
            u.id
        ))[0]
            .clone()
    };
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

// ---- sessions -------------------------------------------------------------------------------

fn session_ids_are_stored_hashed(b: &Backend) {
    let f = fixture(b);
    add(&f.accounts, "judy", Role::User, "judy's password");
    let (_, session) = f
        .accounts
        .login("judy", "judy's password", "10.0.0.1")
        .unwrap();
    assert_eq!(session.id.as_str().len(), 64);
    assert_eq!(session.csrf_token.len(), 64);
    assert!(!format!("{session:?}").contains(session.id.as_str()));
    let stored = f.column("SELECT id_hash FROM sessions");
    assert_eq!(stored, [session.id.hash()]);
    assert_ne!(stored[0], session.id.as_str());
    // Presenting the stored hash as a cookie does not work.
    assert!(matches!(
        f.accounts.session(&SessionId::new(stored[0].clone())),
        Err(Error::SessionInvalid)
    ));
}

fn idle_timeout_and_touching(b: &Backend) {
    let f = fixture(b);
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

fn absolute_lifetime_ends_busy_sessions(b: &Backend) {
    let f = fixture(b);
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

fn logout_and_csrf(b: &Backend) {
    let f = fixture(b);
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

fn purge_expired_sessions(b: &Backend) {
    let f = fixture(b);
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

fn change_password_keeps_only_the_current_session(b: &Backend) {
    let f = fixture(b);
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

fn admin_set_password_logs_the_user_out(b: &Backend) {
    let f = fixture(b);
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

fn reset_token_round_trip_and_single_use(b: &Backend) {
    let f = fixture(b);
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

fn token_after_a_password_change_is_refused(b: &Backend) {
    let f = fixture(b);
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

fn token_errors_are_distinct(b: &Backend) {
    let f = fixture(b);
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
    let other = fixture_with(
        b,
        AccountsConfig {
            clock: Arc::new(f.clock.clone()),
            ..AccountsConfig::with_secret(*b"a different secret of 32 bytes!!")
        },
        f.clock.clone(),
    )
    .accounts;
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

fn token_of_a_deleted_user_is_invalid(b: &Backend) {
    let f = fixture(b);
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

fn simultaneous_uses_of_one_token_succeed_once(b: &Backend) {
    let f = fixture(b);
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

    let conn = rusqlite::Connection::open(&db).unwrap();
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

// ---- several instances on one PostgreSQL database -------------------------------------------

/// Instances that share a database: each with its own pool, as separate processes would be.
fn instances(n: usize) -> Option<(Fixture, Vec<Accounts>)> {
    let b = Backend::postgres()?;
    let f = fixture(&b);
    let others = (0..n)
        .map(|_| {
            let Db::Postgres(pool) = &f.db else {
                unreachable!()
            };
            let url = pool.target().to_owned();
            let own = PgPool::connect(&format!("postgres://postgres@{url}"), 4).unwrap();
            Accounts::with_store(Arc::new(PgStore::open(own).unwrap()), config(&f.clock)).unwrap()
        })
        .collect();
    Some((f, others))
}

#[test]
fn instances_racing_to_delete_and_demote_keep_one_admin() {
    let Some((f, instances)) = instances(4) else {
        return;
    };
    for round in 0..5 {
        let admins: Vec<User> = (0..4)
            .map(|i| {
                add(
                    &f.accounts,
                    &format!("r{round}a{i}"),
                    Role::Admin,
                    "password-a",
                )
            })
            .collect();
        // Remove the earlier rounds' survivor, so these four are the only administrators.
        for u in f.accounts.list_users(PageRequest::default()).unwrap().users {
            if u.role == Role::Admin && !admins.iter().any(|a| a.id == u.id) {
                f.accounts.delete_user(u.id).unwrap();
            }
        }
        let handles: Vec<_> = admins
            .iter()
            .zip(&instances)
            .enumerate()
            .map(|(i, (a, accounts))| {
                let (accounts, id) = (accounts.clone(), a.id);
                thread::spawn(move || {
                    if i % 2 == 0 {
                        accounts.delete_user(id).map(|_| ())
                    } else {
                        accounts.set_role(id, Role::User).map(|_| ())
                    }
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            3,
            "{results:?}"
        );
        assert!(
            results.iter().any(|r| matches!(r, Err(Error::LastAdmin))),
            "{results:?}"
        );
        assert_eq!(
            f.column("SELECT count(*)::TEXT FROM users WHERE role = 'admin'"),
            ["1"]
        );
    }
}

#[test]
fn instances_racing_to_use_one_token_succeed_once() {
    let Some((f, instances)) = instances(4) else {
        return;
    };
    let u = add(&f.accounts, "tess", Role::User, "tess's password");
    let (_, token) = f
        .accounts
        .issue_reset_token("tess@example.com")
        .unwrap()
        .unwrap();
    let handles: Vec<_> = instances
        .iter()
        .enumerate()
        .map(|(i, accounts)| {
            let (accounts, token) = (accounts.clone(), token.clone());
            thread::spawn(move || {
                accounts.set_password_with_token(
                    TokenPurpose::Reset,
                    &token,
                    &format!("new password number {i}"),
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
    assert_eq!(f.accounts.user(u.id).unwrap().password_version, 2);
}

#[test]
fn instances_share_sessions_and_throttling() {
    let Some((f, instances)) = instances(2) else {
        return;
    };
    add(&f.accounts, "uma", Role::User, "uma's password");
    let (_, session) = instances[0]
        .login("uma", "uma's password", "10.0.0.9")
        .unwrap();
    instances[1].session(&session.id).unwrap();
    instances[1].logout(&session.id).unwrap();
    assert!(matches!(
        instances[0].session(&session.id),
        Err(Error::SessionInvalid)
    ));
    // Failures at either instance count towards one limit.
    for i in 0..10 {
        let _ = instances[i % 2].login("uma", "wrong", "10.0.0.9");
    }
    assert!(matches!(
        instances[0].login("uma", "uma's password", "10.0.0.9"),
        Err(Error::Throttled { .. })
    ));
}

#[test]
fn instances_starting_together_migrate_once_and_share_one_secret() {
    let Some(Backend::Postgres(url)) = Backend::postgres() else {
        return;
    };
    let pool = fresh_database(&url);
    let target = pool.target().to_owned();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let url = format!("postgres://postgres@{target}");
            thread::spawn(move || {
                let store = PgStore::open(PgPool::connect(&url, 2).unwrap()).unwrap();
                store
                    .shared_secret("token key", &format!("candidate {i}"))
                    .unwrap()
            })
        })
        .collect();
    let secrets: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(secrets.iter().all(|s| s == &secrets[0]), "{secrets:?}");
    assert!(secrets[0].starts_with("candidate "));
    let store = PgStore::open(pool.clone()).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        accounts::store::PG_SCHEMA_VERSION
    );

    // A database a newer build migrated is refused and left alone.
    pool.run("pretend a newer build", |client| async move {
        client
            .batch_execute(
                "UPDATE schema_versions SET version = version + 1 WHERE component = 'accounts'",
            )
            .await?;
        Ok::<_, pg_pool::Error>(())
    })
    .unwrap();
    assert!(matches!(
        PgStore::open(pool.clone()),
        Err(Error::SchemaTooNew { .. })
    ));
}
