//! PostgreSQL for blocking code: the stores of `accounts` and `history-store` have synchronous
//! traits (the web app calls them from `spawn_blocking`), while the maintained PostgreSQL client,
//! `tokio-postgres` with the `deadpool-postgres` pool, is asynchronous. A [`PgPool`] owns a small
//! private tokio runtime for its connections; [`PgPool::run`] sends one unit of work there and
//! waits for its answer on a plain channel, so it may be called from any thread, inside another
//! runtime's blocking pool or outside any runtime.
//!
//! It also holds what every PostgreSQL backend of a cluster needs once:
//! - [`PgPool::migrate`]: numbered schema steps per component, applied in one transaction under
//!   an advisory lock, so instances starting together never apply a step twice;
//! - [`PgPool::exclusive`]: an advisory lock around a periodic job, so that of many instances
//!   only one runs it at a time.
//!
//! ```no_run
//! # fn main() -> Result<(), pg_pool::Error> {
//! let pool = pg_pool::PgPool::connect("postgres://mask@127.0.0.1:5432/mask", 8)?;
//! pool.migrate("example", &["CREATE TABLE example (id BIGSERIAL PRIMARY KEY, name TEXT)"])?;
//! let n: i64 = pool.run("count examples", |client| async move {
//!     let row = client.query_one("SELECT count(*) FROM example", &[]).await?;
//!     Ok::<_, pg_pool::Error>(row.get(0))
//! })?;
//! assert_eq!(n, 0);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, mpsc};
use std::time::Duration;

pub use deadpool_postgres::Object as Client;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
pub use tokio_postgres;
use tokio_postgres::NoTls;

/// Everything that can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection URL does not parse, or a setting is out of range.
    #[error("invalid PostgreSQL setting: {0}")]
    Config(String),
    /// No connection could be had from the pool (server down, refused, timed out).
    #[error("no PostgreSQL connection to {op}")]
    Pool {
        /// What the connection was for.
        op: &'static str,
        /// The pool's error.
        #[source]
        source: deadpool_postgres::PoolError,
    },
    /// A statement failed.
    #[error("PostgreSQL error during {op}")]
    Query {
        /// What was being done.
        op: &'static str,
        /// The server's or the driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database was migrated by a newer build; refusing to touch it.
    #[error("the {component} schema is at version {found}, newer than the supported {supported}")]
    SchemaTooNew {
        /// Whose schema.
        component: String,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The private runtime could not start, or the work was lost (it panicked).
    #[error("PostgreSQL worker: {0}")]
    Runtime(String),
}

impl From<tokio_postgres::Error> for Error {
    fn from(source: tokio_postgres::Error) -> Self {
        Error::Query {
            op: "a query",
            source,
        }
    }
}

impl Error {
    /// The server's SQLSTATE code, when the server refused a statement.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Error::Query { source, .. } => source.code(),
            _ => None,
        }
    }

    /// The constraint a statement violated, when the server names one.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Error::Query { source, .. } => source.as_db_error().and_then(|e| e.constraint()),
            _ => None,
        }
    }

    /// A closure for `map_err` naming what was being done.
    pub fn during(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Query { op, source }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A pool of PostgreSQL connections usable from blocking code. Cheap to clone.
#[derive(Clone)]
pub struct PgPool {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// Host, port and database, for messages (never the password).
    target: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A runtime dropped inside another runtime's task would panic; this never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl PgPool {
    /// Connects to `url` (`postgres://user:password@host:port/database`, or the key=value
    /// form) with at most `max_connections` connections, and checks that the server answers.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad URL or a zero size; [`Error::Pool`] if the server cannot be
    /// reached within 10 s.
    pub fn connect(url: &str, max_connections: usize) -> Result<PgPool> {
        if max_connections == 0 {
            return Err(Error::Config(
                "the pool needs at least one connection".into(),
            ));
        }
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::Config(format!("database URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("mask-web");
        }
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("postgres")
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(format!("cannot start: {e}")))?;
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::Config(format!("pool: {e}")))?;
        let pg = PgPool {
            inner: Arc::new(Inner {
                runtime: Some(runtime),
                pool,
                target,
            }),
        };
        pg.ping()?;
        Ok(pg)
    }

    /// Where the pool connects (host, port, database; never the password).
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Runs `work` (named `op` in errors) with a pooled connection on the pool's runtime and
    /// waits for its result. Errors of the caller's type `E` pass through; a connection that
    /// cannot be had becomes `E::from(Error::Pool { op, .. })`.
    pub fn run<T, E, F, Fut>(&self, op: &'static str, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let pool = self.inner.pool.clone();
        self.block_on(async move {
            let client = pool
                .get()
                .await
                .map_err(|source| E::from(Error::Pool { op, source }))?;
            work(client).await
        })
        .map_err(E::from)?
    }

    /// Runs any future on the pool's runtime and waits for it (for clients of other services
    /// that live beside the database, such as an object store).
    ///
    /// # Errors
    /// [`Error::Runtime`] if the future panicked.
    pub fn block_on<T, Fut>(&self, future: Fut) -> Result<T>
    where
        T: Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let Some(runtime) = self.inner.runtime.as_ref() else {
            return Err(Error::Runtime("shut down".into()));
        };
        let (tx, rx) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| Error::Runtime("the work was lost (it panicked)".into()))
    }

    /// Checks that the server answers.
    ///
    /// # Errors
    /// [`Error::Pool`] or [`Error::Query`].
    pub fn ping(&self) -> Result<()> {
        self.run("ping", |client| async move {
            client
                .simple_query("SELECT 1")
                .await
                .map_err(Error::during("ping"))?;
            Ok(())
        })
    }

    /// Brings `component`'s schema up to `steps.len()`: the steps not yet applied run in order,
    /// all in one transaction under a transaction-level advisory lock, and the version is kept
    /// in the table `schema_versions`. Returns the version now in place.
    ///
    /// Never edit a released step: append a new one.
    ///
    /// # Errors
    /// [`Error::SchemaTooNew`] if a newer build migrated the database (nothing is changed);
    /// [`Error::Query`] if a step fails (nothing of this call is kept).
    pub fn migrate(&self, component: &str, steps: &'static [&'static str]) -> Result<i64> {
        let component = component.to_owned();
        let key = lock_key(&format!("migrate {component}"));
        self.run("migrate", move |mut client| async move {
            let supported = i64::try_from(steps.len()).unwrap_or(i64::MAX);
            let tx = client
                .transaction()
                .await
                .map_err(Error::during("begin a migration"))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
                .await
                .map_err(Error::during("take the migration lock"))?;
            // "relation schema_versions already exists, skipping" on every start is not news.
            tx.batch_execute("SET LOCAL client_min_messages = warning")
                .await
                .map_err(Error::during("quiet the migration's notices"))?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_versions (
                    component TEXT PRIMARY KEY,
                    version BIGINT NOT NULL
                )",
            )
            .await
            .map_err(Error::during("create schema_versions"))?;
            let found: i64 = tx
                .query_opt(
                    "SELECT version FROM schema_versions WHERE component = $1",
                    &[&component],
                )
                .await
                .map_err(Error::during("read the schema version"))?
                .map_or(0, |row| row.get(0));
            if found > supported {
                return Err(Error::SchemaTooNew {
                    component,
                    found,
                    supported,
                });
            }
            let pending = usize::try_from(found).unwrap_or(0);
            for step in steps.iter().skip(pending) {
                tx.batch_execute(step)
                    .await
                    .map_err(Error::during("apply a migration"))?;
            }
            tx.execute(
                "INSERT INTO schema_versions (component, version) VALUES ($1, $2)
                 ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
                &[&component, &supported.max(found)],
            )
            .await
            .map_err(Error::during("record the schema version"))?;
            tx.commit()
                .await
                .map_err(Error::during("commit a migration"))?;
            Ok(supported.max(found))
        })
    }

    /// The schema version of `component` (0 if it was never migrated).
    ///
    /// # Errors
    /// [`Error::Pool`] or [`Error::Query`].
    pub fn schema_version(&self, component: &str) -> Result<i64> {
        let component = component.to_owned();
        self.run("read the schema version", move |client| async move {
            let exists: bool = client
                .query_one("SELECT to_regclass('schema_versions') IS NOT NULL", &[])
                .await
                .map_err(Error::during("look for schema_versions"))?
                .get(0);
            if !exists {
                return Ok(0);
            }
            Ok(client
                .query_opt(
                    "SELECT version FROM schema_versions WHERE component = $1",
                    &[&component],
                )
                .await
                .map_err(Error::during("read the schema version"))?
                .map_or(0, |row| row.get(0)))
        })
    }

    /// Runs `job` (on the calling thread) only if no other holder of the advisory lock named
    /// `name` is running it, anywhere in the cluster; `Ok(None)` if someone is. The lock is a
    /// session lock on one pooled connection: it ends with the job, or with the connection if
    /// this process dies.
    ///
    /// # Errors
    /// [`Error::Pool`] or [`Error::Query`] taking the lock; the job's own result is returned
    /// inside `Some`.
    pub fn exclusive<T>(&self, name: &str, job: impl FnOnce() -> T) -> Result<Option<T>> {
        let key = lock_key(name);
        let pool = self.inner.pool.clone();
        let (client, got) = self.block_on(async move {
            let client = pool.get().await.map_err(|source| Error::Pool {
                op: "take a job lock",
                source,
            })?;
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await
                .map_err(Error::during("try a job lock"))?
                .get(0);
            Ok::<_, Error>((client, got))
        })??;
        if !got {
            return Ok(None);
        }
        let out = job();
        let released = self.block_on(async move {
            let ok = client
                .query_one("SELECT pg_advisory_unlock($1)", &[&key])
                .await
                .is_ok();
            if !ok {
                // Closing the connection is what releases a session lock for certain.
                drop(Client::take(client));
            }
            ok
        })?;
        if !released {
            return Err(Error::Runtime(
                "could not release a job lock; its connection was closed".into(),
            ));
        }
        Ok(Some(out))
    }
}

/// For the test suites of the crates that use this one: fresh databases on a test server.
#[doc(hidden)]
pub mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{Error, PgPool, Result};

    /// Creates a new, empty database on the server at `admin_url` (a `postgres://` URL),
    /// named `LABEL_PID_N`, and returns the URL for it (`admin_url` with its database replaced).
    ///
    /// # Errors
    /// [`Error::Config`] for a label that is not lowercase letters, digits and `_`, or a URL
    /// without a database part; [`Error::Pool`] or [`Error::Query`] from the server.
    pub fn scratch_database(admin_url: &str, label: &str) -> Result<String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        if label.is_empty()
            || !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(Error::Config(format!("bad database label {label:?}")));
        }
        let Some((base, _)) = admin_url.rsplit_once('/') else {
            return Err(Error::Config("the URL has no database part".into()));
        };
        let name = format!(
            "{label}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = PgPool::connect(admin_url, 1)?;
        let n = name.clone();
        admin.run("create a scratch database", move |client| async move {
            // CREATE and DROP DATABASE cannot run inside a transaction: one statement each.
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {n}"))
                .await?;
            client
                .batch_execute(&format!("CREATE DATABASE {n}"))
                .await?;
            Ok::<_, Error>(())
        })?;
        Ok(format!("{base}/{name}"))
    }
}

/// A stable 64-bit advisory lock key for a name (FNV-1a).
pub fn lock_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default)");
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("a"), lock_key("a"));
        assert_ne!(lock_key("migrate accounts"), lock_key("migrate history"));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        assert!(matches!(
            PgPool::connect("postgres://host:notaport/db", 2),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            PgPool::connect("postgres://127.0.0.1/db", 0),
            Err(Error::Config(_))
        ));
    }
}
