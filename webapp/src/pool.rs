//! The bounded detection pool: detection runs on `workers` dedicated threads, with at most
//! `queue` more jobs waiting; anything beyond gets [`Busy`] at once (HTTP 503) instead of piling
//! up memory.
//!
//! Dedicated threads rather than tokio's blocking pool: a detection allocates a few hundred MiB
//! of activations and the C allocator keeps freed memory in per-thread arenas, so detections stay
//! on a fixed set of threads (and out of the way of the blocking pool's file and database work).
//! Measured with `benches/src/bin/load.rs` at concurrency 4, the server's peak RSS was 926 MiB
//! before and 917 MiB after: the bound comes from the `workers` detections in flight, not from the
//! threads (PERFORMANCE.md has the load figures).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

/// The pool is full: try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

type Job = Box<dyn FnOnce() + Send>;

/// Admission control and a fixed set of worker threads for CPU-heavy jobs.
#[derive(Clone)]
pub struct Pool {
    jobs: mpsc::Sender<Job>,
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
    /// Start `workers` threads (named `detect-N`); `queue` more jobs may wait for them.
    /// The threads end when the last clone of the pool is dropped.
    pub fn new(workers: usize, queue: usize) -> std::io::Result<Pool> {
        let workers = workers.max(1);
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..workers {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("detect-{i}"))
                .spawn(move || {
                    loop {
                        // Hold the lock only to take a job, not while running it.
                        let job = match receiver.lock() {
                            Ok(r) => r.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // every sender dropped: shut down
                        }
                    }
                })?;
        }
        Ok(Pool {
            jobs,
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: workers + queue,
        })
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

    /// Run `job` on a worker thread (in arrival order) and wait for its result. A panic in the
    /// job is caught and returned as an error; the worker lives on.
    pub async fn run<T: Send + 'static>(
        &self,
        _ticket: &Ticket,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (done, result) = oneshot::channel();
        let wrapped: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let _ = done.send(outcome);
        });
        self.jobs
            .send(wrapped)
            .map_err(|_| "detection pool closed".to_string())?;
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err("detection task panicked".to_string()),
            Err(_) => Err("detection pool closed".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_capacity_then_refuses_until_a_ticket_drops() {
        let pool = Pool::new(1, 1).unwrap();
        let a = pool.admit().unwrap();
        let _b = pool.admit().unwrap();
        assert!(pool.admit().is_err());
        drop(a);
        assert!(pool.admit().is_ok());
    }

    #[tokio::test]
    async fn runs_jobs_on_its_own_named_threads() {
        let pool = Pool::new(2, 0).unwrap();
        let t = pool.admit().unwrap();
        let v = pool.run(&t, || 6 * 7).await.unwrap();
        assert_eq!(v, 42);
        let name = pool
            .run(&t, || std::thread::current().name().map(String::from))
            .await
            .unwrap();
        assert!(
            name.as_deref().is_some_and(|n| n.starts_with("detect-")),
            "{name:?}"
        );
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_worker_survives() {
        let pool = Pool::new(1, 0).unwrap();
        let t = pool.admit().unwrap();
        let e = pool.run(&t, || panic!("boom")).await;
        assert_eq!(e, Err::<(), _>("detection task panicked".into()));
        assert_eq!(pool.run(&t, || 1).await, Ok(1));
    }
}
