//! The bounded detection pool: detection runs on blocking threads, at most `workers` at once,
//! with at most `queue` more waiting; anything beyond gets [`Busy`] at once (HTTP 503) instead of
//! piling up memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

/// The pool is full: try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Admission control and concurrency limit for CPU-heavy jobs.
#[derive(Clone)]
pub struct Pool {
    running: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
}

/// A place in the pool, held from before the upload body is read until the job ends, so request
/// bodies in memory are bounded by the pool's capacity too.
pub struct Ticket {
    admitted: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pool {
    /// `workers` jobs run at once; `queue` more may wait.
    pub fn new(workers: usize, queue: usize) -> Pool {
        Pool {
            running: Arc::new(Semaphore::new(workers.max(1))),
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: workers.max(1) + queue,
        }
    }

    /// Take a place, or [`Busy`] when `workers + queue` jobs are already admitted.
    pub fn admit(&self) -> Result<Ticket, Busy> {
        let mut n = self.admitted.load(Ordering::Acquire);
        loop {
            if n >= self.capacity {
                return Err(Busy);
            }
            match self
                .admitted
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Ok(Ticket {
                        admitted: self.admitted.clone(),
                    });
                }
                Err(now) => n = now,
            }
        }
    }

    /// Run `job` on a blocking thread once a worker slot is free.
    pub async fn run<T: Send + 'static>(
        &self,
        _ticket: &Ticket,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let _permit = self
            .running
            .acquire()
            .await
            .map_err(|_| "detection pool closed".to_string())?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| format!("detection task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_capacity_then_refuses_until_a_ticket_drops() {
        let pool = Pool::new(1, 1);
        let a = pool.admit().unwrap();
        let _b = pool.admit().unwrap();
        assert!(pool.admit().is_err());
        drop(a);
        assert!(pool.admit().is_ok());
    }

    #[tokio::test]
    async fn runs_jobs_on_blocking_threads() {
        let pool = Pool::new(2, 0);
        let t = pool.admit().unwrap();
        let v = pool.run(&t, || 6 * 7).await.unwrap();
        assert_eq!(v, 42);
    }
}
