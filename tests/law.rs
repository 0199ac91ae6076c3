//! The pacing law where it must run in Redis: the turn scripts (`budget/turn.lua`,
//! `budget/done.lua`) give, for one table of cases, what `control::law` gives, the functions
//! the throttle and the plant call. Each case is run through the scripts on the real Redis.

mod common;

use std::time::Duration;

use redis::AsyncCommands;
use tidegate::control::budget::{LEASE, Turns};
use tidegate::control::law;
use tidegate::queue::connect;
use tidegate::queue::keys::BudgetKeys;

/// Pace (documents/s), documents in a batch, the queue's mean batch run time (ms).
const CASES: &[(f64, usize, f64)] = &[
    (1000.0, 100, 500.0),
    (1000.0, 100, 0.0),
    (50.0, 200, 3000.0),
    (20000.0, 1, 2.5),
    (7.0, 0, 1000.0),
    (333.3, 37, 123.4),
];

/// Redis' clock, ms.
async fn redis_ms(redis: &mut tidegate::queue::Redis) -> f64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(redis).await.expect("TIME");
    s as f64 * 1000.0 + us as f64 / 1000.0
}

#[tokio::test]
async fn the_scripts_count_slots_as_the_law_does() {
    let mut redis = connect(&common::redis_url()).await.expect("redis");
    for &(pace, documents, took) in CASES {
        let keys = BudgetKeys::new(&common::unique("law"));
        let turns = Turns::new(redis.clone(), &keys, "q", "p");
        let now = redis_ms(&mut redis).await;
        let _: () = redis
            .zadd(keys.members(), "p", now + 60_000.0)
            .await
            .expect("member");
        let _: () = redis
            .hset(keys.turn("q"), "took", took)
            .await
            .expect("took");
        let slots = law::slots(pace, documents as f64, took / 1000.0);
        for i in 1..slots {
            let _: () = redis
                .zadd(keys.running("q"), format!("p:{i}"), now + 60_000.0)
                .await
                .expect("running");
        }
        // The last slot is free: the batch takes it (no turn is held yet) ...
        let taken = turns.take(documents, pace, "p:last").await.expect("turn");
        assert_eq!(
            taken, None,
            "slot {slots} of {slots} free: {pace}/s, {documents} documents, {took} ms"
        );
        // ... and then none is: the next waits, whatever the turn says.
        let _: () = redis.hdel(keys.turn("q"), "start").await.expect("no turn");
        let full = turns.take(documents, pace, "p:over").await.expect("turn");
        assert!(
            full.is_some_and(|w| w >= Duration::from_millis(20) && w <= Duration::from_millis(250)),
            "slot {} of {slots} taken ({pace}/s, {documents} documents, {took} ms): {full:?}",
            slots + 1
        );
    }
}

#[tokio::test]
async fn the_scripts_space_turns_and_time_batches_as_the_law_does() {
    let mut redis = connect(&common::redis_url()).await.expect("redis");
    for &(pace, documents, took) in CASES {
        let keys = BudgetKeys::new(&common::unique("law"));
        let turns = Turns::new(redis.clone(), &keys, "q", "p");
        // A batch of `documents` started 1 ms ago holds the turn for law::turn of it.
        let started = redis_ms(&mut redis).await - 1.0;
        let _: () = redis
            .hset_multiple(
                keys.turn("q"),
                &[("start", started), ("documents", documents as f64)],
            )
            .await
            .expect("turn");
        let hold = law::turn(documents as f64, pace) * 1000.0;
        let wait = turns.take(1, pace, "p:next").await.expect("turn");
        let now = redis_ms(&mut redis).await;
        let expected = started + hold - now;
        match wait {
            None => assert!(expected <= 2.0, "no wait, but {expected} ms were owed"),
            Some(wait) => {
                let wait = wait.as_secs_f64() * 1000.0;
                assert!(
                    (wait - expected).abs() <= 3.0,
                    "waited {wait} ms for a turn of {hold} ms, {expected} ms left"
                );
            }
        }
        // A batch that ran `took` ms joins the mean as the law weighs it.
        let mean = 40.0;
        let _: () = redis
            .hset(keys.turn("q"), "took", mean)
            .await
            .expect("mean");
        let lapses = redis_ms(&mut redis).await - took + LEASE.as_millis() as f64;
        let _: () = redis
            .zadd(keys.running("q"), "p:timed", lapses)
            .await
            .expect("running");
        turns.release("p:timed").await.expect("release");
        let after: f64 = redis.hget(keys.turn("q"), "took").await.expect("took");
        let expected = law::mean_took(mean, took);
        // The script's clock runs a few ms past the test's, a fifth of which reaches the mean.
        assert!(
            (after - expected).abs() <= 1.0,
            "mean {after} ms after a batch of {took} ms, the law says {expected}"
        );
    }
}
