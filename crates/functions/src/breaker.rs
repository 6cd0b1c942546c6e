//! Circuit breakers, one per repository. After `failures` clone or build failures in a
//! row the breaker opens: requests for the repository fail at once for `cool_down`. Then
//! one trial request is let through (the others still fail at once); its success closes
//! the breaker, its failure opens it again. Only failures that are the repository's
//! (cloning, fetching, building its dispatcher) count, so a caller sending bad calls
//! cannot open the breaker for everyone else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Repositories tracked at most; beyond this, closed breakers are forgotten first.
const MAX_TRACKED: usize = 10_000;

/// The breaker is open.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "requests for {repo} are refused for {}s after {failures} clone or build failures in a row",
    retry_after.as_secs().max(1)
)]
pub struct Open {
    pub repo: String,
    pub failures: u32,
    pub retry_after: Duration,
}

#[derive(Debug)]
pub struct Breakers {
    failures: u32,
    cool_down: Duration,
    states: Arc<Mutex<HashMap<String, State>>>,
}

#[derive(Debug, Default)]
struct State {
    in_a_row: u32,
    open_until: Option<Instant>,
    trial: bool,
}

/// A request let through. Say how the repository's work went with [`Admission::failed`]
/// or [`Admission::succeeded`]; a trial dropped without either lets the next one through.
#[derive(Debug)]
pub struct Admission {
    states: Option<Arc<Mutex<HashMap<String, State>>>>,
    repo: String,
    trial: bool,
    failures: u32,
    cool_down: Duration,
}

impl Breakers {
    /// `failures` 0 turns them off.
    pub fn new(failures: u32, cool_down: Duration) -> Breakers {
        Breakers { failures, cool_down, states: Arc::default() }
    }

    pub fn admit(&self, repo: &str) -> Result<Admission, Open> {
        let mut admission = Admission {
            states: None,
            repo: repo.to_owned(),
            trial: false,
            failures: self.failures,
            cool_down: self.cool_down,
        };
        if self.failures == 0 {
            return Ok(admission);
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = states.get_mut(repo)
            && let Some(until) = state.open_until
        {
            let now = Instant::now();
            let open = Open { repo: repo.to_owned(), failures: self.failures, retry_after: Duration::ZERO };
            if now < until {
                metrics::counter!("skyisland_circuit_rejected_total").increment(1);
                return Err(Open { retry_after: until - now, ..open });
            }
            if state.trial {
                metrics::counter!("skyisland_circuit_rejected_total").increment(1);
                return Err(Open { retry_after: Duration::from_secs(1), ..open });
            }
            state.trial = true;
            admission.trial = true;
        }
        drop(states);
        admission.states = Some(Arc::clone(&self.states));
        Ok(admission)
    }

    /// Repositories whose breaker is open now.
    pub fn open_count(&self) -> usize {
        let now = Instant::now();
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.values().filter(|s| s.open_until.is_some_and(|until| now < until) || s.trial).count()
    }
}

/// Tells the breaker how an admitted request went. It counts what the repository itself
/// caused: a clone or build that failed, or (`ok`) the repository fetched and built.
/// Anything else (a bad call, the function's own failure) leaves it as it was.
pub fn count(admission: Admission, ok: bool, error: Option<&crate::FunctionError>) {
    use crate::FunctionError;
    match error {
        _ if ok => admission.succeeded(),
        Some(
            FunctionError::RepoNotFound { .. }
            | FunctionError::CloneFailed { .. }
            | FunctionError::TooLarge(_)
            | FunctionError::BuildFailed { .. }
            | FunctionError::BuildTimedOut(_),
        ) => admission.failed(),
        _ => {}
    }
}

impl Admission {
    pub fn failed(mut self) {
        let Some(states) = self.states.take() else { return };
        let mut states = states.lock().unwrap_or_else(|p| p.into_inner());
        if states.len() >= MAX_TRACKED && !states.contains_key(&self.repo) {
            states.retain(|_, s| s.open_until.is_some());
        }
        let state = states.entry(self.repo.clone()).or_default();
        state.in_a_row = state.in_a_row.saturating_add(1);
        state.trial = false;
        if self.trial || state.in_a_row >= self.failures {
            if state.open_until.is_none() || self.trial {
                tracing::warn!(repo = %self.repo, failures = state.in_a_row, cool_down = ?self.cool_down,
                    "circuit breaker open: refusing requests for the repository");
            }
            metrics::counter!("skyisland_circuit_opened_total").increment(1);
            state.open_until = Some(Instant::now() + self.cool_down);
        }
    }

    pub fn succeeded(mut self) {
        let Some(states) = self.states.take() else { return };
        let mut states = states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = states.remove(&self.repo)
            && state.open_until.is_some()
        {
            tracing::info!(repo = %self.repo, "circuit breaker closed");
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let (Some(states), true) = (self.states.take(), self.trial) {
            let mut states = states.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(state) = states.get_mut(&self.repo) {
                state.trial = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_then_lets_one_trial_through() {
        let breakers = Breakers::new(2, Duration::from_millis(50));
        breakers.admit("r").unwrap().failed();
        breakers.admit("r").unwrap().succeeded();
        breakers.admit("r").unwrap().failed();
        assert!(breakers.admit("r").is_ok(), "a success in between resets the count");
        breakers.admit("r").unwrap().failed();
        let open = breakers.admit("r").unwrap_err();
        assert!(open.retry_after <= Duration::from_millis(50));
        assert!(breakers.admit("other").is_ok(), "per repository");
        std::thread::sleep(Duration::from_millis(60));
        let trial = breakers.admit("r").unwrap();
        assert!(breakers.admit("r").is_err(), "one trial at a time");
        trial.failed();
        assert!(breakers.admit("r").is_err(), "a failed trial opens it again");
        std::thread::sleep(Duration::from_millis(60));
        breakers.admit("r").unwrap().succeeded();
        assert!(breakers.admit("r").is_ok());
        assert_eq!(breakers.open_count(), 0);
    }

    #[test]
    fn a_trial_that_says_nothing_lets_the_next_through() {
        let breakers = Breakers::new(1, Duration::from_millis(10));
        breakers.admit("r").unwrap().failed();
        std::thread::sleep(Duration::from_millis(20));
        drop(breakers.admit("r").unwrap());
        assert!(breakers.admit("r").is_ok());
    }

    #[test]
    fn off_when_failures_is_zero() {
        let breakers = Breakers::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            breakers.admit("r").unwrap().failed();
        }
        assert!(breakers.admit("r").is_ok());
    }
}
