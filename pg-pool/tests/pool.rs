//! `PgPool` against a real PostgreSQL server: the one `MASK_TEST_POSTGRES` names (`make test`
//! starts one through `webapp/test_support/services.py`; without it each test prints SKIPPED).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::Duration;

use pg_pool::{Error, PgPool};

/// A pool on a new, empty database of the test server.
fn fresh() -> Option<PgPool> {
    let Ok(url) = std::env::var("MASK_TEST_POSTGRES") else {
        eprintln!("SKIPPED: MASK_TEST_POSTGRES is not set (make test starts a server)");
        return None;
    };
    let url = pg_pool::testing::scratch_database(&url, "pool").unwrap();
    Some(PgPool::connect(&url, 4).unwrap())
}

fn same_database(pool: &PgPool) -> PgPool {
    PgPool::connect(&format!("postgres://postgres@{}", pool.target()), 4).unwrap()
}

fn count(pool: &PgPool, sql: &'static str) -> i64 {
    pool.run("count", move |client| async move {
        Ok::<_, Error>(client.query_one(sql, &[]).await?.get(0))
    })
    .unwrap()
}

/// Steps that fail if run twice (no IF NOT EXISTS), so a double application shows.
const STEPS: &[&str] = &[
    "CREATE TABLE one (id BIGINT PRIMARY KEY)",
    "CREATE TABLE two (id BIGINT PRIMARY KEY); INSERT INTO one VALUES (1)",
];

#[test]
fn instances_migrating_at_once_apply_each_step_once() {
    let Some(pool) = fresh() else { return };
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (own, barrier) = (same_database(&pool), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                own.migrate("race", STEPS)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), 2);
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM one"), 1);
    assert_eq!(pool.schema_version("race").unwrap(), 2);
    assert_eq!(pool.schema_version("never migrated").unwrap(), 0);
}

#[test]
fn a_failing_step_leaves_the_schema_as_it_was() {
    let Some(pool) = fresh() else { return };
    pool.migrate("partial", &STEPS[..1]).unwrap();
    const BAD: &[&str] = &[
        "CREATE TABLE one (id BIGINT PRIMARY KEY)",
        "CREATE TABLE three (x INT); SELECT no_such_column FROM one",
    ];
    assert!(matches!(
        pool.migrate("partial", BAD),
        Err(Error::Query { .. })
    ));
    assert_eq!(pool.schema_version("partial").unwrap(), 1);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'three'"
        ),
        0
    );
    // A newer database is refused.
    pool.migrate("partial", STEPS).unwrap();
    assert!(matches!(
        pool.migrate("partial", &STEPS[..1]),
        Err(Error::SchemaTooNew {
            found: 2,
            supported: 1,
            ..
        })
    ));
}

#[test]
fn exclusive_jobs_run_on_one_holder_at_a_time() {
    let Some(pool) = fresh() else { return };
    let other = same_database(&pool);
    let (started_tx, started_rx) = mpsc::channel();
    let (finish_tx, finish_rx) = mpsc::channel::<()>();
    let holder = {
        let pool = pool.clone();
        thread::spawn(move || {
            pool.exclusive("the job", || {
                started_tx.send(()).unwrap();
                finish_rx.recv_timeout(Duration::from_secs(30)).unwrap();
                "done by the first"
            })
        })
    };
    started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    // Another instance finds the lock taken; another job name is free.
    assert_eq!(other.exclusive("the job", || "second").unwrap(), None);
    assert_eq!(
        other.exclusive("another job", || "free").unwrap(),
        Some("free")
    );
    finish_tx.send(()).unwrap();
    assert_eq!(holder.join().unwrap().unwrap(), Some("done by the first"));
    assert_eq!(
        other.exclusive("the job", || "second").unwrap(),
        Some("second")
    );
}

#[test]
fn usable_from_inside_another_runtime_and_dropped_there() {
    let Some(pool) = fresh() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        // Blocking calls belong on the blocking pool; they must work there...
        let p = pool.clone();
        tokio::task::spawn_blocking(move || p.ping())
            .await
            .unwrap()
            .unwrap();
        // ...and dropping the last handle inside a task must not panic.
        drop(pool);
    });
}

#[test]
fn an_unreachable_server_is_an_error_not_a_hang() {
    let started = std::time::Instant::now();
    // Port 1 on loopback: nothing listens there.
    let err = PgPool::connect("postgres://postgres@127.0.0.1:1/none", 1).unwrap_err();
    assert!(matches!(err, Error::Pool { op: "ping", .. }), "{err:?}");
    assert!(err.to_string().contains("ping"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
}
