//! The periodic maintenance job: expired sessions are deleted and, when a retention is set
//! (`[history] retention_days`), uploads older than it. It runs once at startup and then every
//! `maintenance_interval_minutes`, on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::error::{AppError, chain};

/// What one maintenance run removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Maintenance {
    /// Expired sessions deleted.
    pub sessions: u64,
    /// Uploads past the retention deleted.
    pub uploads: usize,
}

/// One maintenance run (blocking). Both parts run even if one fails; the first error is
/// returned.
pub fn run_once(app: &App) -> Result<Maintenance, AppError> {
    let sessions = app
        .accounts
        .purge_expired_sessions()
        .map_err(AppError::from);
    let uploads = match app.settings.retention() {
        Some(age) => app.history.purge_older_than(age).map_err(AppError::from),
        None => Ok(0),
    };
    Ok(Maintenance {
        sessions: sessions?,
        uploads: uploads?,
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
                Ok(Ok(done)) if done != Maintenance::default() => {
                    tracing::info!(
                        sessions = done.sessions,
                        uploads = done.uploads,
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
