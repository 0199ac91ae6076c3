//! The pacing law's pieces, each written once: how many of a queue's batches may run at once
//! ([`slots`]), how long a batch holds the queue's turn ([`turn`]), and the running mean of
//! batch run times ([`mean_took`]). The throttle and the plant (the simulation that judges the
//! controller) call these. The turn scripts (`budget/turn.lua`, `budget/done.lua`) must run in
//! Redis to be atomic across processes; one table of cases holds them to these functions
//! (`tests/turns.rs`).

/// The newest batch's weight in the running mean of batch run times.
pub const NEWEST: f64 = 0.2;

/// Slots beyond what the pace needs: half again, so a batch slower than the mean does not
/// hold the next one back.
pub const SPARE: f64 = 1.5;

/// How many batches of `documents` may run at once at `pace` (documents per second) when a
/// batch runs for `took` seconds: batches a second times how long one runs, with [`SPARE`];
/// at least one.
pub fn slots(pace: f64, documents: f64, took: f64) -> usize {
    let slots = (SPARE * pace / documents.max(1.0) * took).ceil();
    if slots.is_finite() && slots >= 1.0 {
        slots as usize
    } else {
        1
    }
}

/// How long (seconds) a batch of `documents` holds the queue's turn at `pace`: the next batch
/// of the queue, from any process, starts no sooner.
pub fn turn(documents: f64, pace: f64) -> f64 {
    documents / pace
}

/// The running mean of batch run times after one that ran `took`; the first (`mean` 0) is
/// taken as it is.
pub fn mean_took(mean: f64, took: f64) -> f64 {
    if mean > 0.0 {
        (1.0 - NEWEST) * mean + NEWEST * took
    } else {
        took
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_pace_and_the_run_time_with_half_again_and_never_fewer_than_one() {
        // 1,000 documents/s in batches of 100 that take 0.5 s: 5 running, 7.5 with the spare.
        assert_eq!(slots(1000.0, 100.0, 0.5), 8);
        assert_eq!(slots(1000.0, 100.0, 0.0), 1, "none timed yet");
        assert_eq!(slots(0.0, 100.0, 0.5), 1, "no pace");
        assert_eq!(slots(f64::INFINITY, 100.0, 0.5), 1, "not a number of slots");
        assert_eq!(
            slots(10.0, 0.0, 1.0),
            15,
            "an empty batch counts as one document"
        );
    }

    #[test]
    fn the_mean_weighs_the_newest_by_a_fifth_and_starts_at_the_first() {
        assert_eq!(mean_took(0.0, 3.0), 3.0);
        assert!((mean_took(1.0, 2.0) - 1.2).abs() < 1e-12);
        assert!((turn(50.0, 100.0) - 0.5).abs() < 1e-12);
    }
}
