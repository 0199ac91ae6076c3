//! Riding through an outage: a long-running command's read or write that failed for a reason
//! that passes (the database or Redis out of reach, a fail-over, a time limit) is tried again
//! with backoff, said once when it starts failing and once when it works again; any other
//! error, or the caller's deadline, ends it at once with that error.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// An error that says whether trying again later may succeed.
pub trait Transient {
    fn transient(&self) -> bool;
}

/// First wait after a failure; each next one doubles, up to [`LONGEST`].
const FIRST: Duration = Duration::from_millis(500);
const LONGEST: Duration = Duration::from_secs(15);

/// Runs `attempt` until it succeeds, its error is not transient, or `deadline` passes (never,
/// for `None`). `what` names the operation in the two log lines an outage gives.
pub async fn ride_through<T, E, F, Fut>(
    what: &str,
    deadline: Option<Instant>,
    mut attempt: F,
) -> Result<T, E>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut wait = FIRST;
    let mut failing_since = None;
    loop {
        match attempt().await {
            Ok(done) => {
                if let Some(since) = failing_since {
                    let lasted = Duration::from_secs(Instant::elapsed(&since).as_secs());
                    tracing::info!(lasted = %humantime::format_duration(lasted), "{what}: works again");
                }
                return Ok(done);
            }
            Err(e) if e.transient() && deadline.is_none_or(|d| Instant::now() + wait < d) => {
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!(error = %e, "{what}: failed; trying again until it works");
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LONGEST);
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Failure(bool);

    impl Transient for Failure {
        fn transient(&self) -> bool {
            self.0
        }
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transient: {}", self.0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_ridden_through_others_end_it() {
        let mut left = 5;
        let done = ride_through("reading", None, || {
            left -= 1;
            let failed = left > 0;
            async move { if failed { Err(Failure(true)) } else { Ok(7) } }
        })
        .await;
        assert_eq!(done.ok(), Some(7));
        let mut tries = 0;
        let ended = ride_through::<(), _, _, _>("reading", None, || {
            tries += 1;
            async { Err(Failure(false)) }
        })
        .await;
        assert!(
            ended.is_err() && tries == 1,
            "a permanent error ends it at once"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tries = 0;
        let ended = ride_through::<(), _, _, _>("reading", Some(deadline), || {
            tries += 1;
            async { Err(Failure(true)) }
        })
        .await;
        assert!(ended.is_err(), "the deadline ends it");
        assert!(Instant::now() <= deadline && tries > 2, "{tries} tries");
    }
}
