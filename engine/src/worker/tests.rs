use super::*;
use crate::queue::{Backoff, BackoffKind, JobOptions, Keep};

fn job(attempts: Option<u32>, attempts_made: u32) -> Job {
    Job {
        id: "j".into(),
        name: "n".into(),
        raw_data: "{}".into(),
        opts: JobOptions {
            attempts,
            backoff: Some(Backoff::Spec {
                kind: BackoffKind::Exponential,
                delay: 100,
                jitter: None,
            }),
            ..JobOptions::default()
        },
        timestamp: 0,
        attempts_made,
    }
}

#[test]
fn transient_failures_retry_until_attempts_run_out() {
    let o = WorkerOptions::default();
    let first = settlement_for(&job(Some(3), 0), Outcome::transient("t"), &o, 0.5);
    assert!(
        matches!(first, Settlement::Retry { delay, .. } if delay == Duration::from_millis(100))
    );
    let second = settlement_for(&job(Some(3), 1), Outcome::transient("t"), &o, 0.5);
    assert!(
        matches!(second, Settlement::Retry { delay, .. } if delay == Duration::from_millis(200))
    );
    let last = settlement_for(&job(Some(3), 2), Outcome::transient("t"), &o, 0.5);
    assert!(matches!(
        last,
        Settlement::Failed {
            exhausted: true,
            ..
        }
    ));
}

#[test]
fn permanent_failures_never_retry() {
    let o = WorkerOptions::default();
    let s = settlement_for(&job(Some(5), 0), Outcome::permanent("bad"), &o, 0.5);
    assert!(matches!(
        s,
        Settlement::Failed {
            exhausted: false,
            ..
        }
    ));
}

#[test]
fn job_retention_overrides_the_worker_default() {
    let o = WorkerOptions::default();
    let mut j = job(None, 0);
    let done = settlement_for(&j, Outcome::Completed(serde_json::json!(1)), &o, 0.0);
    assert!(
        matches!(done, Settlement::Completed { keep, .. } if keep == Retention::keep_last(50_000))
    );
    j.opts.remove_on_complete = Some(Keep::Flag(true));
    let done = settlement_for(&j, Outcome::Completed(serde_json::json!(1)), &o, 0.0);
    assert!(matches!(done, Settlement::Completed { keep, .. } if keep == Retention::keep_last(0)));
}
