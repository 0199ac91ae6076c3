//! The throttle: a `governor` token bucket that paces documents. A batch of n documents takes
//! n cells; the burst is the largest batch, so one batch can always pass, and no more than one
//! batch's worth can ever pass at once. It also carries what the pacer and the worker tell each
//! other: the batch size the controller chose, the queue's backlog, and the ledger of this
//! process's batches (when each began and ended its work on the database).
//!
//! governor cannot change a quota in place, so a new rate means a new limiter, swapped in with
//! `arc-swap`. A fresh limiter starts full; it is drained down to the credit the old one had
//! earned before it is published, so a rate change never lets a fresh burst through, and never
//! throws away what waiters have waited for. Waiters wake on a swap and go on at the new rate.
//!
//! Paid for, a batch also waits for its queue's turn and slot (see [`Turns`]) when it has
//! them: the turn spaces the queue's batches across all its processes at the queue's whole
//! pace, the slots bound how many run at once, and the bucket, earning at that same whole pace
//! in each process, keeps the pace's history, which the turn does not: credit is earned only
//! while the pace allows it (none while the budget is zero), where a turn counts the time since
//! the last batch at whatever the pace is now. Earning at a process's share instead paced the
//! fleet twice: with 16 processes each had to save 50 s of its share for a batch of 100, and
//! the fleet idled with a backlog (42% for a 70% target). Without turns (no budget in Redis)
//! the bucket earns at the process's share.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;

use crate::control::budget::{Finished, Started, Turns};
use crate::control::law;
use crate::telemetry::names;

/// A shared handle: clones pace against the same bucket.
#[derive(Clone)]
pub struct Throttle {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<Paced>,
    /// Documents per batch, as the controller chose.
    batch: AtomicUsize,
    /// Jobs of the queue waiting to be taken, as the worker last counted.
    backlog: AtomicU64,
    /// Whether this process exports its queue's depth (the pacer says, from the budget: one
    /// process per queue does).
    reports_depth: AtomicBool,
    ledger: Mutex<Ledger>,
    /// Batches this process has in flight (claimed slots), and the mean time one took (µs).
    in_flight: AtomicUsize,
    duration_us: AtomicU64,
    /// Woken when a slot frees or the pace changes.
    freed: Notify,
    /// Woken when a batch's slot among its queue's is released in Redis: a turn refused for
    /// want of a slot asks again then, not after its wait. Woken on the slot's drop instead,
    /// it asked before the release had landed and was refused again: with one slot, every
    /// batch waited out the whole wait (measured: 10-document upsert batches 0.23 s apart,
    /// 40 jobs/s against a pace of 300/s and more).
    released: Notify,
    burst: NonZeroU32,
    swapped: Notify,
    clock: DefaultClock,
    /// The part of a cell the last limiter had earned, owed to the next (f64 bits).
    fraction: AtomicU64,
    /// Batches so far, for their ids in the queue's slots.
    batches: AtomicU64,
    turns: Option<Turns>,
}

/// This process's batches since the pacer last reported them.
#[derive(Default)]
struct Ledger {
    next: u64,
    /// In flight: seq → (start, documents, reported yet).
    in_flight: HashMap<u64, (Instant, u64, bool)>,
    finished: Vec<(u64, Instant, Instant, u64)>,
}

struct Paced {
    rate: f64,
    limiter: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("rate", &self.rate())
            .field("burst", &self.inner.burst)
            .finish()
    }
}

/// Slowest rate a limiter is built for: governor needs a finite period, and a rate this low
/// already means "stopped" for a batch processor.
const MIN_RATE: f64 = 0.001;

impl Throttle {
    /// `rate` documents/second; `burst` the largest batch (at least 1); batches take `turns`
    /// with the other processes of the queue, when given.
    pub fn new(rate: f64, burst: usize, turns: Option<Turns>) -> Self {
        let burst =
            NonZeroU32::new(u32::try_from(burst).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        let current = ArcSwap::from_pointee(Paced::new(rate, burst, &clock, 0));
        Self {
            inner: Arc::new(Inner {
                current,
                // Until the controller chooses, a tenth of the largest: its cold start.
                batch: AtomicUsize::new((burst.get() as usize / 10).max(1)),
                backlog: AtomicU64::new(0),
                reports_depth: AtomicBool::new(true),
                ledger: Mutex::new(Ledger::default()),
                in_flight: AtomicUsize::new(0),
                duration_us: AtomicU64::new(0),
                freed: Notify::new(),
                released: Notify::new(),
                burst,
                swapped: Notify::new(),
                clock,
                fraction: AtomicU64::new(0),
                batches: AtomicU64::new(0),
                turns,
            }),
        }
    }

    pub fn rate(&self) -> f64 {
        self.inner.current.load().rate
    }

    /// How many documents a batch should carry: the controller's choice, at least one, at
    /// most the burst.
    pub(crate) fn batch_hint(&self) -> usize {
        self.inner
            .batch
            .load(Ordering::Relaxed)
            .clamp(1, self.inner.burst.get() as usize)
    }

    pub(crate) fn set_batch(&self, documents: usize) {
        self.inner.batch.store(documents, Ordering::Relaxed);
    }

    /// Sets the queue's pace `total`, shared by `members` processes: the bucket earns at the
    /// whole pace when the queue's batches take turns (the turn spaces them across processes),
    /// at this process's share otherwise.
    pub(crate) fn set_share(&self, total: f64, members: u64) {
        let members = if self.inner.turns.is_some() {
            1
        } else {
            members.max(1)
        };
        self.set_rate(total / members as f64);
    }

    pub fn set_backlog(&self, jobs: u64) {
        self.inner.backlog.store(jobs, Ordering::Relaxed);
    }

    pub fn backlog(&self) -> u64 {
        self.inner.backlog.load(Ordering::Relaxed)
    }

    pub(crate) fn set_reports_depth(&self, reports: bool) {
        self.inner.reports_depth.store(reports, Ordering::Relaxed);
    }

    /// Whether this process exports its queue's depth (see [`crate::telemetry::held`]).
    pub fn reports_depth(&self) -> bool {
        self.inner.reports_depth.load(Ordering::Relaxed)
    }

    /// Notes that a batch of `documents` begins its work on the database; returns what
    /// [`Throttle::end_batch`] takes.
    pub(crate) fn start_batch(&self, documents: usize) -> u64 {
        let Ok(mut ledger) = self.inner.ledger.lock() else {
            return 0;
        };
        ledger.next += 1;
        let seq = ledger.next;
        ledger
            .in_flight
            .insert(seq, (Instant::now(), documents as u64, false));
        seq
    }

    pub(crate) fn end_batch(&self, seq: u64) {
        if let Ok(mut ledger) = self.inner.ledger.lock()
            && let Some((start, documents, _)) = ledger.in_flight.remove(&seq)
        {
            let took = start.elapsed().as_micros() as f64;
            let mean = self.inner.duration_us.load(Ordering::Relaxed) as f64;
            let mean = law::mean_took(mean, took).round() as u64;
            self.inner.duration_us.store(mean, Ordering::Relaxed);
            ledger
                .finished
                .push((seq, start, Instant::now(), documents));
        }
    }

    /// Batches this process may have in flight at its pace: batches per second times how long
    /// one takes (here), with half again to spare; at least one. (The queue's slots across
    /// processes are counted in Redis, by the same rule: turn.lua.)
    pub(crate) fn slots(&self) -> usize {
        let took = self.inner.duration_us.load(Ordering::Relaxed) as f64 / 1e6;
        law::slots(self.rate(), self.batch_hint() as f64, took)
    }

    /// Waits for a slot to run a batch in; it is free again when the [`Slot`] is dropped.
    pub(crate) async fn claim(&self) -> Slot {
        loop {
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let slots = self.slots();
            let held = self.inner.in_flight.load(Ordering::Acquire);
            if held < slots {
                if self
                    .inner
                    .in_flight
                    .compare_exchange(held, held + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Slot {
                        inner: self.inner.clone(),
                        lease: None,
                    };
                }
                continue;
            }
            // A pace raised by the pacer allows more: look again a few times a second.
            tokio::select! {
                () = &mut freed => {}
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// The batches started (still in flight, not reported before) and finished since the
    /// last call, in ms before `now`.
    pub fn report(&self, now: Instant) -> (Vec<Started>, Vec<Finished>) {
        let ago = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
        let Ok(mut ledger) = self.inner.ledger.lock() else {
            return (Vec::new(), Vec::new());
        };
        let mut started = Vec::new();
        for (seq, (start, documents, reported)) in ledger.in_flight.iter_mut() {
            if !*reported {
                *reported = true;
                started.push(Started {
                    seq: *seq,
                    ago_ms: ago(*start),
                    documents: *documents,
                });
            }
        }
        let finished = ledger
            .finished
            .drain(..)
            .map(|(seq, start, end, documents)| Finished {
                seq,
                started_ago_ms: ago(start),
                ended_ago_ms: ago(end),
                documents,
            })
            .collect();
        (started, finished)
    }

    /// Paces from now on at `rate`. Unchanged rates keep the current bucket (and its credit).
    pub fn set_rate(&self, rate: f64) {
        let rate = rate.max(MIN_RATE);
        if (self.rate() - rate).abs() <= f64::EPSILON * rate {
            return;
        }
        let earned = self
            .inner
            .current
            .load()
            .take_credit(self.inner.burst, &self.inner.clock);
        // A limiter holds whole cells: the fraction is kept for the next change. Dropped, it
        // was up to a cell lost per change, and at a share under a document a second (16
        // processes on a slow pace) with a change every interval a batch never filled.
        let exact = earned + f64::from_bits(self.inner.fraction.load(Ordering::Relaxed));
        let whole = exact.floor().clamp(0.0, f64::from(self.inner.burst.get()));
        let fraction = if whole >= f64::from(self.inner.burst.get()) {
            0.0
        } else {
            exact - whole
        };
        self.inner
            .fraction
            .store(fraction.to_bits(), Ordering::Relaxed);
        let paced = Paced::new(rate, self.inner.burst, &self.inner.clock, whole as u32);
        self.inner.current.store(Arc::new(paced));
        self.inner.swapped.notify_waiters();
    }

    /// Waits until `documents` may be written, and for the queue's turn and one of its slots
    /// (held by `slot` until it is dropped); returns how long it waited.
    pub(crate) async fn acquire(&self, documents: usize, slot: &mut Slot) -> Duration {
        let started = Instant::now();
        let mut left = documents;
        while left > 0 {
            let chunk = left.min(self.inner.burst.get() as usize);
            self.acquire_chunk(chunk).await;
            left -= chunk;
        }
        if let Some(turns) = &self.inner.turns {
            let id = self.take_turn(turns, documents).await;
            slot.lease = Some((turns.clone(), id));
        }
        let waited = started.elapsed();
        metrics::histogram!(names::THROTTLE_WAIT).record(waited.as_secs_f64());
        waited
    }

    async fn acquire_chunk(&self, n: usize) {
        let Some(n) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return;
        };
        loop {
            // Registered before looking at the limiter, so a swap in between still wakes us.
            let swapped = self.inner.swapped.notified();
            tokio::pin!(swapped);
            swapped.as_mut().enable();
            let wait = match self.inner.current.load().limiter.check_n(n) {
                Ok(Ok(())) | Err(_) => return, // Err: n > burst, impossible by construction
                Ok(Err(not_until)) => not_until.wait_time_from(self.inner.clock.now()),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut swapped => {}
            }
        }
    }
}

impl Throttle {
    /// Waits for the queue's turn and a slot at its current pace, asking again when the pace
    /// changes; returns the batch's id in the queue's slots. Without Redis the turn is skipped:
    /// the bucket still paces the batch, the pacer drops to the floor when the budget cannot be
    /// reached, and no job can be taken from Redis anyway. The id is returned then too: an
    /// answer lost (Redis frozen, then back) may have taken a slot all the same, which the
    /// batch's end must release rather than leave to its lease.
    async fn take_turn(&self, turns: &Turns, documents: usize) -> String {
        let id = turns.batch_id(self.inner.batches.fetch_add(1, Ordering::Relaxed));
        loop {
            let swapped = self.inner.swapped.notified();
            tokio::pin!(swapped);
            swapped.as_mut().enable();
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            // With turns the bucket earns at the queue's whole pace: the turn's pace too.
            match turns.take(documents, self.rate(), &id).await {
                Ok(None) => return id,
                Ok(Some(wait)) => tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut swapped => {}
                    () = &mut released => {}
                },
                Err(e) => {
                    tracing::debug!(error = %e, "cannot take the queue's turn; going on without");
                    return id;
                }
            }
        }
    }
}

/// A batch's place among this process's batches in flight (see [`Throttle::claim`]).
pub(crate) struct Slot {
    inner: Arc<Inner>,
    /// The batch's slot among its queue's, across processes, when it took one.
    lease: Option<(Turns, String)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.inner.freed.notify_waiters();
        // Released in the background, tried again while Redis is out of reach (a slot held
        // through an outage would keep the queue's batches waiting for its lease); a release
        // that cannot land within the lease, or with no runtime left at shutdown, lapses.
        if let Some((turns, id)) = self.lease.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let inner = self.inner.clone();
            runtime.spawn(async move {
                let lapses = tokio::time::Instant::now() + super::budget::LEASE;
                let mut wait = Duration::from_millis(500);
                loop {
                    match turns.release(&id).await {
                        Ok(()) => {
                            inner.released.notify_waiters();
                            return;
                        }
                        Err(e) if tokio::time::Instant::now() + wait < lapses => {
                            tracing::debug!(error = %e, "cannot release a batch's slot yet");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot release a batch's slot; it lapses");
                            return;
                        }
                    }
                }
            });
        }
    }
}

impl Paced {
    /// A limiter at `rate` holding `credit` cells: what the old one had earned, never a fresh
    /// burst.
    fn new(rate: f64, burst: NonZeroU32, clock: &DefaultClock, credit: u32) -> Self {
        let rate = rate.max(MIN_RATE);
        let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let limiter = RateLimiter::direct_with_clock(quota, clock.clone());
        // A fresh bucket is full: drain it down to the credit carried over.
        if let Some(drain) = NonZeroU32::new(burst.get().saturating_sub(credit)) {
            let _ = limiter.check_n(drain);
        }
        Self { rate, limiter }
    }

    /// Empties this limiter and returns the cells it held, a fraction of the next included.
    /// Carried into the next limiter, they keep waiters' progress across a rate change:
    /// otherwise a waiter for a batch that needs a whole interval's budget would start over at
    /// every change and could wait forever.
    fn take_credit(&self, burst: NonZeroU32, clock: &DefaultClock) -> f64 {
        match self.limiter.check_n(burst) {
            Ok(Ok(())) => f64::from(burst.get()),
            Ok(Err(not_until)) => {
                let missing = not_until.wait_time_from(clock.now()).as_secs_f64() * self.rate;
                (f64::from(burst.get()) - missing).max(0.0)
            }
            Err(_) => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_rate_does_not_release_a_burst() {
        let empty = |t: &Throttle| {
            let limiter = t.inner.current.load();
            limiter
                .limiter
                .check_n(NonZeroU32::MIN)
                .is_ok_and(|r| r.is_err())
        };
        let throttle = Throttle::new(1.0, 100, None);
        // A fresh throttle starts empty, and a swapped-in limiter holds only what was earned.
        assert!(empty(&throttle));
        throttle.set_rate(2.0);
        assert!(empty(&throttle));
        assert_eq!(throttle.rate(), 2.0);
    }

    #[tokio::test]
    async fn a_waiter_moves_to_a_faster_rate() {
        // At 0.01 documents/s a batch of 10 would wait 1000 s; the swap must free it.
        let throttle = Throttle::new(0.01, 10, None);
        let waiter = tokio::spawn({
            let throttle = throttle.clone();
            async move {
                let mut slot = throttle.claim().await;
                throttle.acquire(10, &mut slot).await
            }
        });
        // Keep raising until the waiter is through; a raise that lands before the waiter
        // registered is caught by the next one.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut rate = 1_000.0;
        while !waiter.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the waiter never moved to the new rate"
            );
            throttle.set_rate(rate);
            rate += 1.0;
            tokio::task::yield_now().await;
        }
        assert!(waiter.await.is_ok());
    }

    #[test]
    fn credit_earned_survives_a_rate_change() {
        let throttle = Throttle::new(1_000.0, 100, None);
        let (burst, clock) = (throttle.inner.burst, &throttle.inner.clock);
        // A limiter holding 60 cells, as if 60 ms had passed unused at 1,000/s.
        throttle
            .inner
            .current
            .store(Arc::new(Paced::new(1_000.0, burst, clock, 60)));
        throttle.set_rate(0.001);
        let credit = throttle.inner.current.load().take_credit(burst, clock);
        assert!((60.0..=62.0).contains(&credit), "carried over: {credit}");
    }

    #[tokio::test]
    async fn a_slow_share_fills_through_a_change_every_half_cell() {
        // 100 cells/s, a change every 5 ms (half a cell): over 300 ms, 30 cells are earned
        // and the bucket of 10 is full. Dropping each change's fraction, it stayed empty.
        let throttle = Throttle::new(100.0, 10, None);
        let (burst, clock) = (throttle.inner.burst, &throttle.inner.clock);
        let until = Instant::now() + Duration::from_millis(300);
        let mut rate = 100.0;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
            rate = if rate == 100.0 { 100.001 } else { 100.0 };
            throttle.set_rate(rate);
        }
        let credit = throttle.inner.current.load().take_credit(burst, clock);
        assert!(credit >= 9.0, "earned {credit} of 10");
    }

    #[test]
    fn batches_are_the_controllers_size_within_one_and_the_burst() {
        let throttle = Throttle::new(100.0, 500, None);
        assert_eq!(
            throttle.batch_hint(),
            50,
            "a tenth of the largest until told"
        );
        throttle.set_batch(120);
        assert_eq!(throttle.batch_hint(), 120);
        throttle.set_batch(0);
        assert_eq!(throttle.batch_hint(), 1);
        throttle.set_batch(10_000);
        assert_eq!(throttle.batch_hint(), 500);
        // Three processes share a queue's pace; batches stay whole.
        throttle.set_share(300.0, 3);
        assert_eq!(throttle.rate(), 100.0);
    }

    #[test]
    fn the_ledger_reports_each_batch_started_once_and_finished_once() {
        let throttle = Throttle::new(100.0, 500, None);
        let a = throttle.start_batch(10);
        let b = throttle.start_batch(20);
        throttle.end_batch(a);
        let (started, finished) = throttle.report(Instant::now());
        assert_eq!(
            started
                .iter()
                .map(|s| (s.seq, s.documents))
                .collect::<Vec<_>>(),
            vec![(b, 20)]
        );
        assert_eq!(
            finished
                .iter()
                .map(|f| (f.seq, f.documents))
                .collect::<Vec<_>>(),
            vec![(a, 10)]
        );
        throttle.end_batch(b);
        let (started, finished) = throttle.report(Instant::now());
        assert!(started.is_empty(), "b was reported started already");
        assert_eq!(finished.len(), 1);
        assert!(finished[0].started_ago_ms >= finished[0].ended_ago_ms);
        assert_eq!(throttle.report(Instant::now()), (Vec::new(), Vec::new()));
    }

    #[tokio::test]
    async fn batches_in_flight_are_what_the_pace_needs() {
        let throttle = Throttle::new(10.0, 100, None);
        throttle.set_batch(100);
        let first = throttle.claim().await;
        // One batch every 10 s, none measured yet: one at a time.
        assert_eq!(throttle.slots(), 1);
        let waiting = tokio::spawn({
            let throttle = throttle.clone();
            async move { throttle.claim().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the second waits for the first");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(second.is_ok_and(|s| s.is_ok()), "freed, the slot passes on");
        // Ten batches a second, each taking 0.4 s: six may overlap.
        throttle.set_rate(1000.0);
        let seq = throttle.start_batch(100);
        std::thread::sleep(Duration::from_millis(400));
        throttle.end_batch(seq);
        assert!((6..=7).contains(&throttle.slots()), "{}", throttle.slots());
    }

    #[tokio::test]
    async fn batches_larger_than_the_burst_pass_in_pieces() {
        // governor refuses outright, without waiting, a request larger than its burst: a batch
        // of 10 through a bucket of 4 must be paid in pieces (10 documents at 10/s from an
        // empty bucket: a second, never under half), and an empty batch pays nothing.
        let throttle = Throttle::new(10.0, 4, None);
        let mut slot = throttle.claim().await;
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            throttle.acquire(10, &mut slot).await + throttle.acquire(0, &mut slot).await
        })
        .await
        .expect("a batch larger than the burst passes");
        assert!(
            waited >= Duration::from_millis(500),
            "paid nothing: {waited:?}"
        );
    }
}
