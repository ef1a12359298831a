//! A few long-lived threads for CPU-heavy request work (a password's argon2: ~19 MiB each).
//!
//! On tokio's blocking pool every call may land on a fresh thread, and the allocator gives
//! each thread an arena of its own that keeps what it freed: a burst of sign-ins left the
//! server hundreds of MiB larger. On a fixed pool of `heavy_work_slots()` threads the memory is
//! reused, and at most that many run at once; a bounded queue holds the rest.

use std::sync::{Arc, Mutex, mpsc};

type Job = Box<dyn FnOnce() + Send>;

/// Jobs waiting beyond this are refused (the caller answers 503).
const QUEUE: usize = 1024;

pub(crate) struct Workers {
    jobs: Option<mpsc::SyncSender<Job>>,
}

/// The password workers.
pub(crate) static PASSWORDS: std::sync::LazyLock<Workers> =
    std::sync::LazyLock::new(|| Workers::start("aerogrid-passwords", crate::heavy_work_slots()));

impl Workers {
    fn start(name: &str, threads: usize) -> Self {
        let (jobs, receiver) = mpsc::sync_channel::<Job>(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let mut started = 0;
        for _ in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
                loop {
                    let job =
                        receiver.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            match spawned {
                Ok(_) => started += 1,
                Err(error) => tracing::error!(%error, "Cannot start a worker thread."),
            }
        }
        Self { jobs: (started > 0).then_some(jobs) }
    }

    /// Runs `work` on a worker; None when the queue is full or no worker could start.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // Nobody waits for it any more (the client went away): not run.
            if !done.is_closed() {
                let _ = done.send(work());
            }
        });
        self.jobs.as_ref()?.try_send(job).ok()?;
        result.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_pools_threads_only() {
        let workers = Workers::start("test-workers", 2);
        let mut names = std::collections::HashSet::new();
        for _ in 0..20 {
            let name = workers
                .run(|| std::thread::current().name().map(str::to_owned))
                .await
                .expect("ran");
            names.insert(name);
        }
        assert_eq!(names, std::collections::HashSet::from([Some("test-workers".to_owned())]));
    }
}
