//! Admission: at most `permits` of a kind of work at once, at most `max_queue` waiting;
//! beyond that a request is refused at once ([`Overloaded`], 503) rather than queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// More work is queued than configured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the server is overloaded: too many {what} queued; try again later")]
pub struct Overloaded {
    pub what: String,
}

#[derive(Clone, Debug)]
pub struct Gate {
    what: &'static str,
    semaphore: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_queue: usize,
}

/// Counts a waiter for as long as it waits, even if its future is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    pub fn new(what: &'static str, permits: usize, max_queue: usize) -> Gate {
        Gate { what, semaphore: Arc::new(Semaphore::new(permits)), waiting: Arc::default(), max_queue }
    }

    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Overloaded> {
        if let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Overloaded { what: self.what.to_owned() });
        }
        let _waiting = Waiting(&self.waiting);
        Ok(Arc::clone(&self.semaphore).acquire_owned().await.expect("the semaphore is never closed"))
    }

    /// Work waiting for a permit.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_beyond_the_queue() {
        let gate = Gate::new("things", 1, 1);
        let first = gate.enter().await.unwrap();
        let g = gate.clone();
        let queued = tokio::spawn(async move { g.enter().await.map(drop) });
        while gate.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.enter().await.unwrap_err(), Overloaded { what: "things".into() });
        drop(first);
        queued.await.unwrap().unwrap();
        assert_eq!(gate.queued(), 0);
    }
}
