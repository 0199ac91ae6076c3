use super::*;

#[test]
fn a_rate_is_a_whole_max_per_the_shortest_window_that_allows_it() {
    // 150 jobs/s: 15 per 100 ms.
    assert_eq!(limit(150.0, None), (15, 100));
    // 53 jobs/s: 6 per 113 ms (53.1/s), not 5 per 100 ms (50/s).
    assert_eq!(limit(53.0, None), (6, 113));
    // Under ten a second: one job per window of 1/rate.
    assert_eq!(limit(4.0, None), (1, 250));
    for rate in [0.3, 1.0, 7.7, 53.0, 150.0, 999.0, 12_345.0] {
        let (max, duration) = limit(rate, None);
        let written = max as f64 * 1000.0 / duration as f64;
        assert!(
            (written - rate).abs() <= 0.02 * rate,
            "{rate}/s written as {max} per {duration} ms"
        );
        assert!(duration as f64 >= WINDOW_MS.min(1000.0 / rate));
    }
}

#[test]
fn no_rate_is_one_job_per_longest_window_as_bullmq_cannot_say_zero() {
    assert_eq!(limit(0.0, None), (1, LONGEST_WINDOW_MS as u64));
    assert_eq!(limit(-3.0, None), (1, LONGEST_WINDOW_MS as u64));
}

#[test]
fn the_workers_own_window_is_the_one_max_is_counted_for() {
    // A worker with `limiter: { max: 5, duration: 1000 }` counts the queue's max per second.
    assert_eq!(limit(37.0, Some(1000.0)), (37, 1000));
    assert_eq!(limit(0.2, Some(1000.0)), (1, 1000));
}

#[test]
fn workers_honour_the_queue_limit_from_bullmq_5_60() {
    assert!(honours("bullmq:5.81.5"));
    assert!(honours("bullmq:5.60.0"));
    assert!(honours("bullmq:6.0.0"));
    assert!(!honours("bullmq:5.59.9"));
    assert!(!honours("bullmq:4.17.0"));
    // Another library's, or an unreadable one: the starts are watched instead.
    assert!(honours("bullmq-pro:7.0.0"));
    assert!(honours("bullmq:next"));
}

#[test]
fn a_fallback_is_found_none_or_a_limit() {
    assert_eq!(Fallback::parse("found"), Ok(Fallback::Found));
    assert_eq!(Fallback::parse("none"), Ok(Fallback::Removed));
    assert_eq!(
        Fallback::parse("5/1s"),
        Ok(Fallback::Limit {
            max: 5,
            duration_ms: 1000
        })
    );
    assert_eq!(
        Fallback::parse(" 300 / 500ms "),
        Ok(Fallback::Limit {
            max: 300,
            duration_ms: 500
        })
    );
    for bad in ["", "5", "five/1s", "5/soon", "0/1s", "5/0s"] {
        assert!(Fallback::parse(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn jobs_are_batches_of_one_from_their_active_event_to_their_end() {
    let mut jobs = Jobs::default();
    let mut seen = Seen::default();
    let first = jobs.next();
    jobs.event("active", "a", 1_000, &mut seen);
    jobs.event("active", "b", 1_100, &mut seen);
    jobs.event("progress", "a", 1_150, &mut seen);
    jobs.event("completed", "a", 1_200, &mut seen);
    // Ended without a start seen (it started before the governor looked): not counted.
    jobs.event("completed", "z", 1_250, &mut seen);
    jobs.event("active", "c", 1_300, &mut seen);
    // A retry sends it back to wait: its attempt ended.
    jobs.event("waiting", "c", 1_400, &mut seen);
    jobs.close(first, 2_000, &mut seen);
    assert_eq!(seen.starts, 3);
    assert_eq!(
        seen.finished,
        vec![
            Finished {
                seq: 1,
                started_ago_ms: 1_000,
                ended_ago_ms: 800,
                documents: 1
            },
            Finished {
                seq: 3,
                started_ago_ms: 700,
                ended_ago_ms: 600,
                documents: 1
            },
        ]
    );
    assert_eq!(
        seen.started,
        vec![Started {
            seq: 2,
            ago_ms: 900,
            documents: 1
        }]
    );
    // At the next look, b is still running but no longer new; its end is reported then.
    let mut next = Seen::default();
    let first = jobs.next();
    jobs.event("failed", "b", 2_500, &mut next);
    jobs.close(first, 3_000, &mut next);
    assert!(next.started.is_empty());
    assert_eq!(next.finished.len(), 1);
    assert_eq!(next.finished[0].seq, 2);
    assert_eq!(next.starts, 0);
}

#[test]
fn a_job_never_seen_ending_is_forgotten() {
    let mut jobs = Jobs::default();
    let mut seen = Seen::default();
    let first = jobs.next();
    jobs.event("active", "a", 1_000, &mut seen);
    jobs.close(first, 1_000 + FORGET_AFTER_MS, &mut seen);
    assert!(seen.started.is_empty() && jobs.running.is_empty());
}
