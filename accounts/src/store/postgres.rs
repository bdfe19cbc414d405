//! The PostgreSQL backend, for several web app instances sharing one database.
//!
//! The invariants SQLite gets from its single writer are kept here by the server: unique
//! names by unique indexes on `lower(...)`, the last administrator by locking every
//! administrator's row (in id order, so two transactions never deadlock) before counting them,
//! and the password version by a compare-and-set `UPDATE`, which PostgreSQL re-checks against
//! the newest row version when two transactions race.

use pg_pool::tokio_postgres::Row;
use pg_pool::{Client, PgPool};

use super::{NewUserRecord, PasswordChange, SessionRecord, Store, UserRecord};
use crate::error::{Error, Result};
use crate::model::{DeletedUser, Role, User, UserId};

/// The name under which the schema version is kept in `schema_versions`.
pub const COMPONENT: &str = "accounts";

/// Schema steps, applied in order by [`PgPool::migrate`]. Never edit a released step.
const MIGRATIONS: &[&str] = &[
    // 1: users, sessions, login throttling, and secrets shared by every instance.
    "CREATE TABLE users (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- identities are never reused
        username TEXT NOT NULL,
        email TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
        password_hash TEXT NOT NULL,
        password_version BIGINT NOT NULL DEFAULT 1,
        must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
        created_at BIGINT NOT NULL,
        last_login_at BIGINT
    );
    CREATE UNIQUE INDEX users_username_key ON users (lower(username));
    CREATE UNIQUE INDEX users_email_key ON users (lower(email));
    CREATE INDEX users_admins ON users (id) WHERE role = 'admin';
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_seen_at BIGINT NOT NULL
    );
    CREATE INDEX sessions_user_id ON sessions (user_id);
    CREATE TABLE login_failures (
        key TEXT NOT NULL,
        at BIGINT NOT NULL
    );
    CREATE INDEX login_failures_key_at ON login_failures (key, at);
    CREATE INDEX login_failures_at ON login_failures (at);
    CREATE TABLE shared_secrets (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
];

/// The schema version this build creates and understands.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const USER_COLUMNS: &str = "id, username, email, role, password_version, must_change_password, \
                            created_at, last_login_at, password_hash";

/// A [`Store`] on a PostgreSQL database, shared by any number of processes.
#[derive(Debug, Clone)]
pub struct PgStore {
    pg: PgPool,
}

impl From<pg_pool::Error> for Error {
    fn from(e: pg_pool::Error) -> Self {
        match e {
            pg_pool::Error::SchemaTooNew {
                found, supported, ..
            } => Error::SchemaTooNew { found, supported },
            pg_pool::Error::Query { op, .. } | pg_pool::Error::Pool { op, .. } => {
                Error::storage(op, e)
            }
            other => Error::storage("reach PostgreSQL", other),
        }
    }
}

fn during(op: &'static str) -> impl FnOnce(pg_pool::tokio_postgres::Error) -> Error {
    move |e| Error::from(pg_pool::Error::during(op)(e))
}

fn user_from_row(row: &Row) -> Result<UserRecord> {
    let role: String = row.get(3);
    Ok(UserRecord {
        user: User {
            id: UserId(row.get(0)),
            username: row.get(1),
            email: row.get(2),
            role: role
                .parse()
                .map_err(|_| Error::storage("read a user", format!("unknown role {role:?}")))?,
            password_version: row.get(4),
            must_change_password: row.get(5),
            created_at: row.get(6),
            last_login_at: row.get(7),
        },
        password_hash: row.get(8),
    })
}

async fn user_where(
    client: &impl pg_pool::tokio_postgres::GenericClient,
    clause: &str,
    value: &(dyn pg_pool::tokio_postgres::types::ToSql + Sync),
) -> Result<Option<UserRecord>> {
    client
        .query_opt(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE {clause}"),
            &[value],
        )
        .await
        .map_err(during("read a user"))?
        .as_ref()
        .map(user_from_row)
        .transpose()
}

/// Locks every administrator's row (in id order) and counts them: a concurrent demotion or
/// deletion of another administrator waits for this transaction, then sees its outcome.
async fn lock_admins(tx: &pg_pool::tokio_postgres::Transaction<'_>) -> Result<u64> {
    let rows = tx
        .query(
            "SELECT id FROM users WHERE role = 'admin' ORDER BY id FOR UPDATE",
            &[],
        )
        .await
        .map_err(during("lock the administrators"))?;
    Ok(rows.len() as u64)
}

impl PgStore {
    /// Uses `pg`, applying pending migrations under the cluster-wide migration lock.
    ///
    /// # Errors
    /// [`Error::SchemaTooNew`] if a newer build migrated the database; [`Error::Storage`] if a
    /// migration fails (it is rolled back).
    pub fn open(pg: PgPool) -> Result<Self> {
        pg.migrate(COMPONENT, MIGRATIONS)?;
        Ok(Self { pg })
    }

    /// The schema version in the database.
    ///
    /// # Errors
    /// [`Error::Storage`] if it cannot be read.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.pg.schema_version(COMPONENT)?)
    }

    /// The secret stored under `name`, storing `candidate` first if there is none yet: every
    /// instance of a cluster gets the one value the first of them stored.
    ///
    /// # Errors
    /// [`Error::Storage`] if the database fails.
    pub fn shared_secret(&self, name: &str, candidate: &str) -> Result<String> {
        let (name, candidate) = (name.to_owned(), candidate.to_owned());
        self.run("keep a shared secret", move |client| async move {
            client
                .execute(
                    "INSERT INTO shared_secrets (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &candidate],
                )
                .await
                .map_err(during("store a shared secret"))?;
            let row = client
                .query_one("SELECT value FROM shared_secrets WHERE name = $1", &[&name])
                .await
                .map_err(during("read a shared secret"))?;
            Ok(row.get(0))
        })
    }

    fn run<T, F, Fut>(&self, op: &'static str, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        self.pg.run(op, work)
    }
}

impl Store for PgStore {
    fn ping(&self) -> Result<()> {
        self.run("ping", |client| async move {
            client
                .query_one("SELECT count(*) FROM users WHERE false", &[])
                .await
                .map_err(during("ping"))?;
            Ok(())
        })
    }

    fn insert_user(&self, new: &NewUserRecord) -> Result<User> {
        let new = new.clone();
        self.run("insert a user", move |client| async move {
            let inserted = client
                .query_one(
                    &format!(
                        "INSERT INTO users (username, email, role, password_hash,
                                            must_change_password, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {USER_COLUMNS}"
                    ),
                    &[
                        &new.username,
                        &new.email,
                        &new.role.as_str(),
                        &new.password_hash,
                        &new.must_change_password,
                        &new.created_at,
                    ],
                )
                .await;
            match inserted {
                Ok(row) => Ok(user_from_row(&row)?.user),
                Err(e) => {
                    let e = pg_pool::Error::during("insert a user")(e);
                    match e.constraint() {
                        Some("users_username_key") => Err(Error::UsernameTaken {
                            username: new.username,
                        }),
                        Some("users_email_key") => Err(Error::EmailTaken { email: new.email }),
                        _ => Err(e.into()),
                    }
                }
            }
        })
    }

    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        self.run("read a user", move |client| async move {
            user_where(&**client, "id = $1", &id.0).await
        })
    }

    fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>> {
        let username = username.to_owned();
        self.run("read a user", move |client| async move {
            user_where(&**client, "lower(username) = lower($1)", &username).await
        })
    }

    fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        let email = email.to_owned();
        self.run("read a user", move |client| async move {
            user_where(&**client, "lower(email) = lower($1)", &email).await
        })
    }

    fn list_users(&self, offset: u64, limit: u32) -> Result<(Vec<User>, u64)> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let limit = i64::from(limit);
        self.run("list users", move |client| async move {
            let rows = client
                .query(
                    &format!("SELECT {USER_COLUMNS} FROM users ORDER BY id LIMIT $1 OFFSET $2"),
                    &[&limit, &offset],
                )
                .await
                .map_err(during("list users"))?;
            let users = rows
                .iter()
                .map(|r| user_from_row(r).map(|u| u.user))
                .collect::<Result<Vec<_>>>()?;
            let total: i64 = client
                .query_one("SELECT count(*) FROM users", &[])
                .await
                .map_err(during("count users"))?
                .get(0);
            Ok((users, u64::try_from(total).unwrap_or(0)))
        })
    }

    fn count_admins(&self) -> Result<u64> {
        self.run("count administrators", |client| async move {
            let n: i64 = client
                .query_one("SELECT count(*) FROM users WHERE role = 'admin'", &[])
                .await
                .map_err(during("count administrators"))?
                .get(0);
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn delete_user(&self, id: UserId) -> Result<DeletedUser> {
        self.run("delete a user", move |mut client| async move {
            let tx = client
                .transaction()
                .await
                .map_err(during("begin deleting a user"))?;
            let admins = lock_admins(&tx).await?;
            let user = user_where(&*tx, "id = $1 FOR UPDATE", &id.0)
                .await?
                .ok_or(Error::NotFound { id })?
                .user;
            if user.role == Role::Admin && admins <= 1 {
                return Err(Error::LastAdmin);
            }
            let sessions = tx
                .execute("DELETE FROM sessions WHERE user_id = $1", &[&id.0])
                .await
                .map_err(during("delete a user's sessions"))?;
            tx.execute("DELETE FROM users WHERE id = $1", &[&id.0])
                .await
                .map_err(during("delete a user"))?;
            tx.commit()
                .await
                .map_err(during("commit deleting a user"))?;
            Ok(DeletedUser {
                user,
                sessions_deleted: sessions,
            })
        })
    }

    fn set_role(&self, id: UserId, role: Role) -> Result<User> {
        self.run("change a role", move |mut client| async move {
            let tx = client
                .transaction()
                .await
                .map_err(during("begin changing a role"))?;
            let admins = lock_admins(&tx).await?;
            let mut user = user_where(&*tx, "id = $1 FOR UPDATE", &id.0)
                .await?
                .ok_or(Error::NotFound { id })?
                .user;
            if user.role == Role::Admin && role != Role::Admin && admins <= 1 {
                return Err(Error::LastAdmin);
            }
            tx.execute(
                "UPDATE users SET role = $1 WHERE id = $2",
                &[&role.as_str(), &id.0],
            )
            .await
            .map_err(during("change a role"))?;
            tx.commit()
                .await
                .map_err(during("commit changing a role"))?;
            user.role = role;
            Ok(user)
        })
    }

    fn set_password(&self, change: &PasswordChange) -> Result<Option<(User, u64)>> {
        let change = change.clone();
        self.run("change a password", move |mut client| async move {
            let tx = client
                .transaction()
                .await
                .map_err(during("begin changing a password"))?;
            let updated = tx
                .query_opt(
                    &format!(
                        "UPDATE users SET password_hash = $1,
                                password_version = password_version + 1,
                                must_change_password = $2
                         WHERE id = $3 AND password_version = $4
                         RETURNING {USER_COLUMNS}"
                    ),
                    &[
                        &change.password_hash,
                        &change.must_change_password,
                        &change.user_id.0,
                        &change.expected_version,
                    ],
                )
                .await
                .map_err(during("change a password"))?;
            let Some(row) = updated else {
                return match user_where(&*tx, "id = $1", &change.user_id.0).await? {
                    Some(_) => Ok(None),
                    None => Err(Error::NotFound { id: change.user_id }),
                };
            };
            let user = user_from_row(&row)?.user;
            let sessions = tx
                .execute(
                    "DELETE FROM sessions WHERE user_id = $1
                     AND id_hash IS DISTINCT FROM $2",
                    &[&change.user_id.0, &change.keep_session_hash],
                )
                .await
                .map_err(during("delete a user's sessions"))?;
            tx.commit()
                .await
                .map_err(during("commit changing a password"))?;
            Ok(Some((user, sessions)))
        })
    }

    fn replace_password_hash(&self, id: UserId, hash: &str, expected_version: i64) -> Result<()> {
        let hash = hash.to_owned();
        self.run("re-hash a password", move |client| async move {
            client
                .execute(
                    "UPDATE users SET password_hash = $1 WHERE id = $2 AND password_version = $3",
                    &[&hash, &id.0, &expected_version],
                )
                .await
                .map_err(during("re-hash a password"))?;
            Ok(())
        })
    }

    fn record_login(&self, id: UserId, at: i64) -> Result<()> {
        self.run("record a login", move |client| async move {
            client
                .execute(
                    "UPDATE users SET last_login_at = $1 WHERE id = $2",
                    &[&at, &id.0],
                )
                .await
                .map_err(during("record a login"))?;
            Ok(())
        })
    }

    fn insert_session(&self, s: &SessionRecord) -> Result<()> {
        let s = s.clone();
        self.run("insert a session", move |client| async move {
            client
                .execute(
                    "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, last_seen_at)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &s.id_hash,
                        &s.user_id.0,
                        &s.csrf_token,
                        &s.created_at,
                        &s.last_seen_at,
                    ],
                )
                .await
                .map_err(during("insert a session"))?;
            Ok(())
        })
    }

    fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>> {
        let id_hash = id_hash.to_owned();
        self.run("read a session", move |client| async move {
            let row = client
                .query_opt(
                    "SELECT id_hash, user_id, csrf_token, created_at, last_seen_at
                     FROM sessions WHERE id_hash = $1",
                    &[&id_hash],
                )
                .await
                .map_err(during("read a session"))?;
            Ok(row.map(|r| SessionRecord {
                id_hash: r.get(0),
                user_id: UserId(r.get(1)),
                csrf_token: r.get(2),
                created_at: r.get(3),
                last_seen_at: r.get(4),
            }))
        })
    }

    fn touch_session(&self, id_hash: &str, at: i64) -> Result<()> {
        let id_hash = id_hash.to_owned();
        self.run("touch a session", move |client| async move {
            client
                .execute(
                    "UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2",
                    &[&at, &id_hash],
                )
                .await
                .map_err(during("touch a session"))?;
            Ok(())
        })
    }

    fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let id_hash = id_hash.to_owned();
        self.run("delete a session", move |client| async move {
            let n = client
                .execute("DELETE FROM sessions WHERE id_hash = $1", &[&id_hash])
                .await
                .map_err(during("delete a session"))?;
            Ok(n > 0)
        })
    }

    fn delete_user_sessions(&self, id: UserId, except: Option<&str>) -> Result<u64> {
        let except = except.map(str::to_owned);
        self.run("delete a user's sessions", move |client| async move {
            client
                .execute(
                    "DELETE FROM sessions WHERE user_id = $1 AND id_hash IS DISTINCT FROM $2",
                    &[&id.0, &except],
                )
                .await
                .map_err(during("delete a user's sessions"))
        })
    }

    fn delete_expired_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64> {
        self.run("delete expired sessions", move |client| async move {
            client
                .execute(
                    "DELETE FROM sessions WHERE last_seen_at < $1 OR created_at < $2",
                    &[&idle_before, &created_before],
                )
                .await
                .map_err(during("delete expired sessions"))
        })
    }

    fn record_login_failure(&self, keys: &[&str], at: i64, prune_before: i64) -> Result<()> {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        self.run("record a login failure", move |mut client| async move {
            let tx = client
                .transaction()
                .await
                .map_err(during("begin recording a failure"))?;
            tx.execute("DELETE FROM login_failures WHERE at < $1", &[&prune_before])
                .await
                .map_err(during("prune login failures"))?;
            tx.execute(
                "INSERT INTO login_failures (key, at) SELECT k, $2 FROM unnest($1::text[]) AS k",
                &[&keys, &at],
            )
            .await
            .map_err(during("record a login failure"))?;
            tx.commit().await.map_err(during("commit a login failure"))
        })
    }

    fn login_failures(&self, key: &str, since: i64) -> Result<(u64, Option<i64>)> {
        let key = key.to_owned();
        self.run("count login failures", move |client| async move {
            let row = client
                .query_one(
                    "SELECT count(*), min(at) FROM login_failures WHERE key = $1 AND at >= $2",
                    &[&key, &since],
                )
                .await
                .map_err(during("count login failures"))?;
            let n: i64 = row.get(0);
            Ok((u64::try_from(n).unwrap_or(0), row.get(1)))
        })
    }

    fn clear_login_failures(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.run("clear login failures", move |client| async move {
            client
                .execute("DELETE FROM login_failures WHERE key = $1", &[&key])
                .await
                .map_err(during("clear login failures"))?;
            Ok(())
        })
    }
}
