//! Whether a dependency (the database, Redis) can be reached, as this process last found it:
//! a circuit that opens on an error that says the dependency is down or silent, and closes when
//! it answers again. While it is open, workers take no jobs (they stay in wait, their attempts
//! untouched) and release what they hold: an outage is not a job's failure. It says so once
//! when it opens and once when it closes, and exports its state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::telemetry::names;

/// One dependency's circuit. Cheap to clone: clones share the state.
#[derive(Clone, Debug)]
pub struct Circuit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dependency: &'static str,
    /// `true` while open.
    state: watch::Sender<bool>,
    /// Since when, and why, while open.
    outage: Mutex<Option<(Instant, String)>>,
}

/// An open circuit as the back-office shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub for_: Duration,
    pub reason: String,
}

impl Circuit {
    pub fn new(dependency: &'static str) -> Self {
        metrics::gauge!(names::CIRCUIT_OPEN, "dependency" => dependency).set(0.0);
        metrics::counter!(names::OUTAGES, "dependency" => dependency).increment(0);
        Self {
            inner: Arc::new(Inner {
                dependency,
                state: watch::Sender::new(false),
                outage: Mutex::new(None),
            }),
        }
    }

    pub fn dependency(&self) -> &'static str {
        self.inner.dependency
    }

    pub fn is_open(&self) -> bool {
        *self.inner.state.borrow()
    }

    /// The outage under way, if the circuit is open.
    pub fn outage(&self) -> Option<Outage> {
        let outage = self.lock();
        outage.as_ref().map(|(since, reason)| Outage {
            for_: since.elapsed(),
            reason: reason.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        self.inner
            .outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens the circuit: the dependency is down or silent. Returns whether this call opened
    /// it (the caller then watches for its return); a no-op while open.
    pub fn open(&self, reason: &str) -> bool {
        let mut outage = self.lock();
        if outage.is_some() {
            return false;
        }
        *outage = Some((Instant::now(), reason.to_owned()));
        drop(outage);
        let dependency = self.inner.dependency;
        tracing::error!(dependency, %reason, "{dependency} is unreachable: taking no jobs until it answers (their attempts untouched)");
        metrics::gauge!(names::CIRCUIT_OPEN, "dependency" => dependency).set(1.0);
        metrics::counter!(names::OUTAGES, "dependency" => dependency).increment(1);
        self.inner.state.send_replace(true);
        true
    }

    /// Closes the circuit: the dependency answers again. A no-op while closed.
    pub fn close(&self) {
        let Some((since, _)) = self.lock().take() else {
            return;
        };
        let dependency = self.inner.dependency;
        let lasted = humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()));
        tracing::warn!(dependency, %lasted, "{dependency} answers again: taking jobs");
        metrics::gauge!(names::CIRCUIT_OPEN, "dependency" => dependency).set(0.0);
        self.inner.state.send_replace(false);
    }

    /// Resolves once the circuit is open (at once if it is).
    pub async fn opened(&self) {
        let mut state = self.inner.state.subscribe();
        // The sender lives in `self`, so the wait cannot end on a dropped channel.
        let _ = state.wait_for(|open| *open).await;
    }

    /// Resolves once the circuit is closed (at once if it is).
    pub async fn closed(&self) {
        let mut state = self.inner.state.subscribe();
        let _ = state.wait_for(|open| !*open).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_opens_once_closes_once_and_wakes_who_waits() {
        let circuit = Circuit::new("test");
        assert!(!circuit.is_open() && circuit.outage().is_none());
        circuit.closed().await;
        let waiter = tokio::spawn({
            let circuit = circuit.clone();
            async move { circuit.opened().await }
        });
        assert!(circuit.open("connection refused"));
        assert!(!circuit.open("again"), "already open");
        waiter.await.expect("woken by the opening");
        assert_eq!(
            circuit.outage().map(|o| o.reason),
            Some("connection refused".to_owned())
        );
        let waiter = tokio::spawn({
            let circuit = circuit.clone();
            async move { circuit.closed().await }
        });
        circuit.close();
        waiter.await.expect("woken by the closing");
        assert!(!circuit.is_open() && circuit.outage().is_none());
        circuit.close();
    }
}
