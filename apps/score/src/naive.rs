//! The original script on the same code: every user at once, one read and one write each, no
//! pacing. Kept only so that benchmarks compare like with like; tidegate never runs it by
//! default.

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use chrono_tz::Tz;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

use super::{DAILY_SCORES, EVENTS, Tally, day_filter, number, score_upsert};
use tidegate::store::Store;

/// What the naive mode did.
#[derive(Debug, Default, Clone, Copy)]
pub struct NaiveReport {
    pub users: u64,
    pub written: u64,
    pub failed: u64,
    pub round_trips: u64,
    pub wall: Duration,
    /// Mean round-trip time of the writes, as the client saw it.
    pub write_rtt: Duration,
}

/// The naive mode's time limit per user. The original script had none, and its users queue for
/// the driver's pool for minutes, so one operation's limit would fail most of them; this only
/// keeps a silent server from holding the comparison forever.
const NAIVE_LIMIT: Duration = Duration::from_secs(600);

/// The original script on the same code: every user at once (no limit of its own; the
/// driver's pool is the only bound), one read and one write per user, no pacing. Kept only so
/// that benchmarks compare like with like; tidegate never runs this by default.
pub async fn run_naive(store: &Store, date: NaiveDate, tz: Tz, users: Vec<String>) -> NaiveReport {
    let started = Instant::now();
    let events = store.database().collection::<Document>(EVENTS);
    let scores = store.database().collection::<Document>(DAILY_SCORES);
    let day = day_filter(date, tz);
    let one_user = |user: String| {
        let (events, scores, day) = (events.clone(), scores.clone(), day.clone());
        async move {
            let mut tally = Tally::default();
            let mut cursor = events
                .find(doc! { "userId": &user, "ts": day })
                .projection(doc! { "_id": 0, "kind": 1, "value": 1 })
                .await?;
            while let Some(event) = cursor.try_next().await? {
                tally.add(
                    event.get_str("kind").unwrap_or(""),
                    number(event.get("value")),
                );
            }
            let upsert = score_upsert(&user, date, tally, None);
            let sent = Instant::now();
            scores
                .update_one(upsert.filter, upsert.update)
                .upsert(true)
                .await
                .map(|_| sent.elapsed())
        }
    };
    let results: Vec<mongodb::error::Result<Duration>> = futures::future::join_all(
        users
            .into_iter()
            .map(|user| store.bounded_for(NAIVE_LIMIT, one_user(user))),
    )
    .await;
    let rtts: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .copied()
        .collect();
    let written = rtts.len() as u64;
    NaiveReport {
        users: results.len() as u64,
        written,
        failed: results.len() as u64 - written,
        round_trips: results.len() as u64 * 2,
        wall: started.elapsed(),
        write_rtt: rtts.iter().sum::<Duration>() / (written.max(1) as u32),
    }
}
