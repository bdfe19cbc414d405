//! The bounded detection pool: detection runs on `workers` dedicated threads, with at most
//! `queue` more jobs waiting; anything beyond gets [`Refused::Busy`] at once (HTTP 503) instead of
//! piling up memory. A place is taken before the upload body is read (so bodies in memory are
//! bounded too), and one client address may hold at most `per_client` places
//! ([`Refused::ClientBusy`], HTTP 429): otherwise a few connections that stall in the middle of
//! their bodies could keep every place, and so everybody else's uploads, for the whole body
//! deadline.
//!
//! Dedicated threads rather than tokio's blocking pool: a detection allocates a few hundred MiB
//! of activations, which the allocator keeps for reuse (`allocator::keep_freed_memory`), so
//! detections stay on a fixed set of threads (and out of the way of the blocking pool's file and
//! database work).
//! Memory is bounded by the `workers` detections in flight, not by the threads (PERFORMANCE.md
//! has the load figures).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use tokio::sync::oneshot;

/// Why a place was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every place is taken: try again later.
    Busy,
    /// This client address already holds its share of places.
    ClientBusy,
}

/// Places taken, in all and per client address.
#[derive(Default)]
struct Places {
    total: usize,
    by_client: HashMap<String, usize>,
}

type Job = Box<dyn FnOnce() + Send>;

/// Admission control and a fixed set of worker threads for CPU-heavy jobs.
#[derive(Clone)]
pub struct Pool {
    jobs: mpsc::Sender<Job>,
    places: Arc<Mutex<Places>>,
    capacity: usize,
    per_client: usize,
}

/// A place in the pool, held from before the upload body is read until the job ends, so request
/// bodies in memory are bounded by the pool's capacity too.
pub struct Ticket {
    places: Arc<Mutex<Places>>,
    client: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut places = self.places.lock().unwrap_or_else(PoisonError::into_inner);
        places.total = places.total.saturating_sub(1);
        if let Some(n) = places.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                places.by_client.remove(&self.client);
            }
        }
    }
}

impl Pool {
    /// Start `workers` threads (named `detect-N`); `queue` more jobs may wait for them, and one
    /// client may hold `per_client` places at most. The threads end when the last clone of the
    /// pool is dropped.
    pub fn new(workers: usize, queue: usize, per_client: usize) -> std::io::Result<Pool> {
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
            places: Arc::new(Mutex::new(Places::default())),
            capacity: workers + queue,
            per_client: per_client.max(1),
        })
    }

    /// Take a place for `client` (its address), or say why not: [`Refused::Busy`] when
    /// `workers + queue` jobs are already admitted, [`Refused::ClientBusy`] when this client
    /// holds `per_client` of them.
    pub fn admit(&self, client: &str) -> Result<Ticket, Refused> {
        let mut places = self.places.lock().unwrap_or_else(PoisonError::into_inner);
        if places.total >= self.capacity {
            return Err(Refused::Busy);
        }
        let held = places.by_client.get(client).copied().unwrap_or(0);
        if held >= self.per_client {
            return Err(Refused::ClientBusy);
        }
        places.total += 1;
        places.by_client.insert(client.to_string(), held + 1);
        Ok(Ticket {
            places: self.places.clone(),
            client: client.to_string(),
        })
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
        let pool = Pool::new(1, 1, 9).unwrap();
        let a = pool.admit("a").unwrap();
        let _b = pool.admit("b").unwrap();
        assert_eq!(pool.admit("c").err(), Some(Refused::Busy));
        drop(a);
        assert!(pool.admit("c").is_ok());
    }

    #[test]
    fn one_client_holds_at_most_its_share() {
        let pool = Pool::new(2, 8, 2).unwrap();
        let a1 = pool.admit("10.0.0.1").unwrap();
        let _a2 = pool.admit("10.0.0.1").unwrap();
        assert_eq!(pool.admit("10.0.0.1").err(), Some(Refused::ClientBusy));
        // Others still get in, and the client gets its place back when one ends.
        let _b = pool.admit("10.0.0.2").unwrap();
        drop(a1);
        assert!(pool.admit("10.0.0.1").is_ok());
    }

    #[tokio::test]
    async fn runs_jobs_on_its_own_named_threads() {
        let pool = Pool::new(2, 0, 1).unwrap();
        let t = pool.admit("a").unwrap();
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
        let pool = Pool::new(1, 0, 1).unwrap();
        let t = pool.admit("a").unwrap();
        let e = pool.run(&t, || panic!("boom")).await;
        assert_eq!(e, Err::<(), _>("detection task panicked".into()));
        assert_eq!(pool.run(&t, || 1).await, Ok(1));
    }
}
