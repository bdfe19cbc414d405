//! The periodic maintenance job: expired sessions are deleted and, when a retention is set
//! (`[history] retention_days`), uploads older than it; on the clustered storage also objects
//! that no row refers to. It runs once at startup and then every `maintenance_interval_minutes`,
//! on the blocking pool. With several instances it runs on one at a time: each run takes a
//! PostgreSQL advisory lock, and an instance that finds it taken skips that run.

use std::sync::Arc;
use std::time::Duration;

use crate::app::{App, Storage};
use crate::error::{AppError, chain};

/// What one maintenance run removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Maintenance {
    /// Expired sessions deleted.
    pub sessions: u64,
    /// Uploads past the retention deleted.
    pub uploads: usize,
    /// Objects without a row removed (clustered storage).
    pub orphans: usize,
    /// Another instance held the job's lock, so this run did nothing.
    pub skipped: bool,
}

/// The name of the cluster-wide lock the job runs under.
pub const JOB_LOCK: &str = "mask-web maintenance";

/// One maintenance run (blocking). Every part runs even if another fails; the first error is
/// returned.
pub fn run_once(app: &App) -> Result<Maintenance, AppError> {
    match &app.storage {
        Storage::Embedded => run_parts(app),
        Storage::Clustered { pg, .. } => match pg.exclusive(JOB_LOCK, || run_parts(app)) {
            Ok(Some(done)) => done,
            Ok(None) => Ok(Maintenance {
                skipped: true,
                ..Maintenance::default()
            }),
            Err(e) => Err(AppError::internal("take the maintenance lock", e)),
        },
    }
}

fn run_parts(app: &App) -> Result<Maintenance, AppError> {
    let sessions = app
        .accounts
        .purge_expired_sessions()
        .map_err(AppError::from);
    let uploads = match app.settings.retention() {
        Some(age) => app.history.purge_older_than(age).map_err(AppError::from),
        None => Ok(0),
    };
    let orphans = match &app.storage {
        Storage::Embedded => Ok(0),
        Storage::Clustered { history, .. } => {
            let grace =
                Duration::from_secs(app.settings.storage.orphan_grace_minutes.saturating_mul(60));
            history
                .sweep(grace)
                .map(|r| r.removed_files)
                .map_err(AppError::from)
        }
    };
    Ok(Maintenance {
        sessions: sessions?,
        uploads: uploads?,
        orphans: orphans?,
        skipped: false,
    })
}

/// Start the job on the current tokio runtime; it ends when the app is dropped.
pub fn start(app: &Arc<App>) {
    let minutes = app.settings.history.maintenance_interval_minutes.max(1);
    let every = Duration::from_secs(minutes.saturating_mul(60));
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(app) = weak.upgrade() else { return };
            match tokio::task::spawn_blocking(move || run_once(&app)).await {
                Ok(Ok(done)) if done.skipped => {
                    tracing::debug!("maintenance: another instance is running it");
                }
                Ok(Ok(done)) if done != Maintenance::default() => {
                    tracing::info!(
                        sessions = done.sessions,
                        uploads = done.uploads,
                        orphans = done.orphans,
                        "maintenance removed expired data"
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %chain(&e), "maintenance failed"),
                Err(e) => tracing::error!(error = %e, "maintenance task failed"),
            }
        }
    });
}
