//! The SQLite backend.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, TransactionBehavior, params};

use super::{NewUserRecord, PasswordChange, SessionRecord, Store, UserRecord};
use crate::error::{Error, Result};
use crate::model::{DeletedUser, Role, User, UserId};

/// Schema steps, applied in order; the database's `user_version` is how many have run.
/// Never edit a released step: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: users and sessions.
    "CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: ids are never reused
        username TEXT NOT NULL COLLATE NOCASE UNIQUE,
        email TEXT NOT NULL COLLATE NOCASE UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
        password_hash TEXT NOT NULL,
        password_version INTEGER NOT NULL DEFAULT 1,
        must_change_password INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        last_login_at INTEGER
    );
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL
    );",
    // 2: login throttling, and the index that makes 'delete all of a user's sessions' cheap.
    "CREATE INDEX sessions_user_id ON sessions(user_id);
    CREATE TABLE login_failures (
        key TEXT NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE INDEX login_failures_key_at ON login_failures(key, at);
    CREATE INDEX login_failures_at ON login_failures(at);",
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// A [`Store`] on one SQLite file, shared by threads through a mutex-guarded connection.
///
/// The file is opened in WAL mode with a 5 s busy timeout, so several processes may use it.
/// Password hashing happens outside the store, so the lock is only held for short queries.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations, each
    /// in its own transaction.
    ///
    /// # Errors
    /// [`Error::SchemaTooNew`] if the file was written by a newer build (it is left untouched);
    /// [`Error::Storage`] if the file cannot be opened or a migration fails (that migration is
    /// rolled back).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let conn = Connection::open(path.as_ref()).map_err(db("open the database"))?;
        Self::from_connection(conn)
    }

    /// Uses an already open connection (e.g. in memory), applying pending migrations.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub fn from_connection(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(db("set the busy timeout"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(db("enable foreign keys"))?;
        // journal_mode answers with a row, so it is read rather than executed.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(db("enable WAL"))?;
        migrate(&mut conn, SCHEMA_VERSION)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// The schema version of the open database.
    ///
    /// # Errors
    /// [`Error::Storage`] if it cannot be read.
    pub fn schema_version(&self) -> Result<i64> {
        schema_version(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (an open transaction
        // is rolled back when dropped), so a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn schema_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db("read the schema version"))
}

/// Applies migrations up to `target` (crate-internal so tests can build an older database).
pub(crate) fn migrate(conn: &mut Connection, target: i64) -> Result<()> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin a migration"))?;
        // Read inside the write transaction, so two processes opening an old file at once
        // cannot both apply the same step.
        let current = schema_version(&tx)?;
        if current > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                found: current,
                supported: SCHEMA_VERSION,
            });
        }
        if current >= target {
            return Ok(());
        }
        let step =
            usize::try_from(current).map_err(|e| Error::storage("read the schema version", e))?;
        let sql = MIGRATIONS
            .get(step)
            .ok_or_else(|| Error::storage("find a migration", format!("no step {}", step + 1)))?;
        tx.execute_batch(sql).map_err(db("apply a migration"))?;
        tx.pragma_update(None, "user_version", current + 1)
            .map_err(db("record the schema version"))?;
        tx.commit().map_err(db("commit a migration"))?;
    }
}

fn db(operation: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| Error::storage(operation, e)
}

impl ToSql for Role {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Role {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            other => Err(FromSqlError::Other(
                format!("unknown role {other:?}").into(),
            )),
        }
    }
}

const USER_COLUMNS: &str = "id, username, email, role, password_version, must_change_password, \
                            created_at, last_login_at, password_hash";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user: User {
            id: UserId(row.get(0)?),
            username: row.get(1)?,
            email: row.get(2)?,
            role: row.get(3)?,
            password_version: row.get(4)?,
            must_change_password: row.get(5)?,
            created_at: row.get(6)?,
            last_login_at: row.get(7)?,
        },
        password_hash: row.get(8)?,
    })
}

fn user_where(conn: &Connection, clause: &str, value: &dyn ToSql) -> Result<Option<UserRecord>> {
    conn.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE {clause}"),
        [value],
        user_from_row,
    )
    .optional()
    .map_err(db("read a user"))
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Store for SqliteStore {
    fn ping(&self) -> Result<()> {
        self.lock()
            .query_row("SELECT count(*) FROM users WHERE 0", [], |_| Ok(()))
            .map_err(db("ping"))
    }

    fn insert_user(&self, new: &NewUserRecord) -> Result<User> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin inserting a user"))?;
        if user_where(&tx, "username = ?1", &new.username)?.is_some() {
            return Err(Error::UsernameTaken {
                username: new.username.clone(),
            });
        }
        if user_where(&tx, "email = ?1", &new.email)?.is_some() {
            return Err(Error::EmailTaken {
                email: new.email.clone(),
            });
        }
        tx.execute(
            "INSERT INTO users (username, email, role, password_hash, must_change_password, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                new.username,
                new.email,
                new.role,
                new.password_hash,
                new.must_change_password,
                new.created_at
            ],
        )
        .map_err(db("insert a user"))?;
        let id = UserId(tx.last_insert_rowid());
        let user = user_where(&tx, "id = ?1", &id.0)?
            .ok_or_else(|| Error::storage("read back a new user", "row vanished"))?;
        tx.commit().map_err(db("commit a new user"))?;
        Ok(user.user)
    }

    fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        user_where(&self.lock(), "id = ?1", &id.0)
    }

    fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>> {
        user_where(&self.lock(), "username = ?1", &username)
    }

    fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        user_where(&self.lock(), "email = ?1", &email)
    }

    fn list_users(&self, offset: u64, limit: u32) -> Result<(Vec<User>, u64)> {
        let conn = self.lock();
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {USER_COLUMNS} FROM users ORDER BY id LIMIT ?1 OFFSET ?2"
            ))
            .map_err(db("list users"))?;
        let users = stmt
            .query_map(params![limit, offset], user_from_row)
            .map_err(db("list users"))?
            .map(|r| r.map(|u| u.user))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db("list users"))?;
        let total: i64 = conn
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
            .map_err(db("count users"))?;
        Ok((users, u64::try_from(total).unwrap_or(0)))
    }

    fn count_admins(&self) -> Result<u64> {
        count_admins(&self.lock())
    }

    fn delete_user(&self, id: UserId) -> Result<DeletedUser> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin deleting a user"))?;
        let user = user_where(&tx, "id = ?1", &id.0)?
            .ok_or(Error::NotFound { id })?
            .user;
        if user.role == Role::Admin && count_admins(&tx)? <= 1 {
            return Err(Error::LastAdmin);
        }
        let sessions = tx
            .execute("DELETE FROM sessions WHERE user_id = ?1", [id.0])
            .map_err(db("delete a user's sessions"))?;
        tx.execute("DELETE FROM users WHERE id = ?1", [id.0])
            .map_err(db("delete a user"))?;
        tx.commit().map_err(db("commit deleting a user"))?;
        Ok(DeletedUser {
            user,
            sessions_deleted: count(sessions),
        })
    }

    fn set_role(&self, id: UserId, role: Role) -> Result<User> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin changing a role"))?;
        let mut user = user_where(&tx, "id = ?1", &id.0)?
            .ok_or(Error::NotFound { id })?
            .user;
        if user.role == Role::Admin && role != Role::Admin && count_admins(&tx)? <= 1 {
            return Err(Error::LastAdmin);
        }
        tx.execute(
            "UPDATE users SET role = ?1 WHERE id = ?2",
            params![role, id.0],
        )
        .map_err(db("change a role"))?;
        tx.commit().map_err(db("commit changing a role"))?;
        user.role = role;
        Ok(user)
    }

    fn set_password(&self, change: &PasswordChange) -> Result<Option<(User, u64)>> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin changing a password"))?;
        let updated = tx
            .execute(
                "UPDATE users SET password_hash = ?1, password_version = password_version + 1,
                        must_change_password = ?2
                 WHERE id = ?3 AND password_version = ?4",
                params![
                    change.password_hash,
                    change.must_change_password,
                    change.user_id.0,
                    change.expected_version
                ],
            )
            .map_err(db("change a password"))?;
        let Some(user) = user_where(&tx, "id = ?1", &change.user_id.0)? else {
            return Err(Error::NotFound { id: change.user_id });
        };
        if updated == 0 {
            return Ok(None);
        }
        let sessions = tx
            .execute(
                "DELETE FROM sessions WHERE user_id = ?1 AND id_hash IS NOT ?2",
                params![change.user_id.0, change.keep_session_hash],
            )
            .map_err(db("delete a user's sessions"))?;
        tx.commit().map_err(db("commit changing a password"))?;
        Ok(Some((user.user, count(sessions))))
    }

    fn replace_password_hash(&self, id: UserId, hash: &str, expected_version: i64) -> Result<()> {
        self.lock()
            .execute(
                "UPDATE users SET password_hash = ?1 WHERE id = ?2 AND password_version = ?3",
                params![hash, id.0, expected_version],
            )
            .map_err(db("re-hash a password"))?;
        Ok(())
    }

    fn record_login(&self, id: UserId, at: i64) -> Result<()> {
        self.lock()
            .execute(
                "UPDATE users SET last_login_at = ?1 WHERE id = ?2",
                params![at, id.0],
            )
            .map_err(db("record a login"))?;
        Ok(())
    }

    fn insert_session(&self, s: &SessionRecord) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, last_seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    s.id_hash,
                    s.user_id.0,
                    s.csrf_token,
                    s.created_at,
                    s.last_seen_at
                ],
            )
            .map_err(db("insert a session"))?;
        Ok(())
    }

    fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>> {
        self.lock()
            .query_row(
                "SELECT id_hash, user_id, csrf_token, created_at, last_seen_at
                 FROM sessions WHERE id_hash = ?1",
                [id_hash],
                |r| {
                    Ok(SessionRecord {
                        id_hash: r.get(0)?,
                        user_id: UserId(r.get(1)?),
                        csrf_token: r.get(2)?,
                        created_at: r.get(3)?,
                        last_seen_at: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(db("read a session"))
    }

    fn touch_session(&self, id_hash: &str, at: i64) -> Result<()> {
        self.lock()
            .execute(
                "UPDATE sessions SET last_seen_at = ?1 WHERE id_hash = ?2",
                params![at, id_hash],
            )
            .map_err(db("touch a session"))?;
        Ok(())
    }

    fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let n = self
            .lock()
            .execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])
            .map_err(db("delete a session"))?;
        Ok(n > 0)
    }

    fn delete_user_sessions(&self, id: UserId, except: Option<&str>) -> Result<u64> {
        let n = self
            .lock()
            .execute(
                "DELETE FROM sessions WHERE user_id = ?1 AND id_hash IS NOT ?2",
                params![id.0, except],
            )
            .map_err(db("delete a user's sessions"))?;
        Ok(count(n))
    }

    fn delete_expired_sessions(&self, idle_before: i64, created_before: i64) -> Result<u64> {
        let n = self
            .lock()
            .execute(
                "DELETE FROM sessions WHERE last_seen_at < ?1 OR created_at < ?2",
                params![idle_before, created_before],
            )
            .map_err(db("delete expired sessions"))?;
        Ok(count(n))
    }

    fn record_login_failure(&self, keys: &[&str], at: i64, prune_before: i64) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn
            .transaction()
            .map_err(db("begin recording a failure"))?;
        tx.execute("DELETE FROM login_failures WHERE at < ?1", [prune_before])
            .map_err(db("prune login failures"))?;
        for key in keys {
            tx.execute(
                "INSERT INTO login_failures (key, at) VALUES (?1, ?2)",
                params![key, at],
            )
            .map_err(db("record a login failure"))?;
        }
        tx.commit().map_err(db("commit a login failure"))
    }

    fn login_failures(&self, key: &str, since: i64) -> Result<(u64, Option<i64>)> {
        let (n, oldest): (i64, Option<i64>) = self
            .lock()
            .query_row(
                "SELECT COUNT(*), MIN(at) FROM login_failures WHERE key = ?1 AND at >= ?2",
                params![key, since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db("count login failures"))?;
        Ok((u64::try_from(n).unwrap_or(0), oldest))
    }

    fn clear_login_failures(&self, key: &str) -> Result<()> {
        self.lock()
            .execute("DELETE FROM login_failures WHERE key = ?1", [key])
            .map_err(db("clear login failures"))?;
        Ok(())
    }
}

fn count_admins(conn: &Connection) -> Result<u64> {
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM users WHERE role = 'admin'", [], |r| {
            r.get(0)
        })
        .map_err(db("count administrators"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_user(name: &str, email: &str, role: Role) -> NewUserRecord {
        NewUserRecord {
            username: name.into(),
            email: email.into(),
            role,
            password_hash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            must_change_password: false,
            created_at: 10,
        }
    }

    #[test]
    fn migrates_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.db");
        std::fs::write(&path, b"").unwrap();
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.count_admins().unwrap(), 0);
        drop(store);
        // Reopening is a no-op.
        assert_eq!(
            SqliteStore::open(&path).unwrap().schema_version().unwrap(),
            SCHEMA_VERSION
        );
    }

    #[test]
    fn refuses_a_newer_database_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(err, Error::SchemaTooNew { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err:?}"
        );
        let conn = Connection::open(&path).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION + 1);
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0);
    }

    #[test]
    fn upgrades_from_the_previous_version_keeping_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            migrate(&mut conn, SCHEMA_VERSION - 1).unwrap();
            assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION - 1);
            conn.execute(
                "INSERT INTO users (username, email, role, password_hash, created_at)
                 VALUES ('old', 'old@example.com', 'admin', 'h', 5)",
                [],
            )
            .unwrap();
            // The previous version has no throttling table yet.
            assert!(conn.execute("DELETE FROM login_failures", []).is_err());
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let old = store.user_by_username("OLD").unwrap().unwrap();
        assert_eq!(old.user.email, "old@example.com");
        assert_eq!(old.user.password_version, 1);
        store.record_login_failure(&["k"], 100, 0).unwrap();
        assert_eq!(store.login_failures("k", 0).unwrap(), (1, Some(100)));
    }

    #[test]
    fn failed_migration_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clash.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            migrate(&mut conn, 1).unwrap();
            // Something squatting on a name step 2 creates makes that step fail.
            conn.execute_batch("CREATE TABLE login_failures (x)")
                .unwrap();
        }
        assert!(matches!(
            SqliteStore::open(&path),
            Err(Error::Storage { .. })
        ));
        let conn = Connection::open(&path).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), 1);
        let idx: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'sessions_user_id'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(idx, 0, "the partial step must be rolled back");
    }

    #[test]
    fn uniqueness_ignores_case() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("u.db")).unwrap();
        store
            .insert_user(&new_user("Alice", "Alice@Example.com", Role::User))
            .unwrap();
        assert!(matches!(
            store.insert_user(&new_user("aLICE", "other@example.com", Role::User)),
            Err(Error::UsernameTaken { .. })
        ));
        assert!(matches!(
            store.insert_user(&new_user("bob", "alice@EXAMPLE.COM", Role::User)),
            Err(Error::EmailTaken { .. })
        ));
        assert!(store.user_by_email("ALICE@example.com").unwrap().is_some());
    }

    #[test]
    fn ids_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("ids.db")).unwrap();
        store
            .insert_user(&new_user("admin", "a@example.com", Role::Admin))
            .unwrap();
        let b = store
            .insert_user(&new_user("b", "b@example.com", Role::User))
            .unwrap();
        store.delete_user(b.id).unwrap();
        let c = store
            .insert_user(&new_user("c", "c@example.com", Role::User))
            .unwrap();
        assert!(c.id > b.id);
    }
}
