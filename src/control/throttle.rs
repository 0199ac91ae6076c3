//! The throttle: a `governor` token bucket that paces documents. A batch of n documents takes
//! n cells; the burst is the largest batch, so one batch can always pass, and no more than one
//! batch's worth can ever pass at once.
//!
//! governor cannot change a quota in place, so a new rate means a new limiter, swapped in with
//! `arc-swap`. A fresh limiter starts full; it is drained down to the credit the old one had
//! earned before it is published, so a rate change never lets a fresh burst through, and never
//! throws away what waiters have waited for. Waiters wake on a swap and go on at the new rate.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;

use crate::telemetry::names;

/// A shared handle: clones pace against the same bucket.
#[derive(Clone)]
pub struct Throttle {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<Paced>,
    /// Documents actually taken since the pacer last looked: the demand, as opposed to the
    /// budget.
    used: AtomicU64,
    /// Processes sharing the total rate (this one included), for sizing batches.
    members: AtomicU64,
    burst: NonZeroU32,
    swapped: Notify,
    clock: DefaultClock,
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
    /// `rate` documents/second; `burst` the largest batch (at least 1).
    pub fn new(rate: f64, burst: usize) -> Self {
        let burst =
            NonZeroU32::new(u32::try_from(burst).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        let current = ArcSwap::from_pointee(Paced::new(rate, burst, &clock, 0));
        Self {
            inner: Arc::new(Inner {
                current,
                used: AtomicU64::new(0),
                members: AtomicU64::new(1),
                burst,
                swapped: Notify::new(),
                clock,
            }),
        }
    }

    pub fn rate(&self) -> f64 {
        self.inner.current.load().rate
    }

    /// How many documents a batch should carry: `span`'s worth of the queue's total rate (this
    /// process's share times the members), so that the writes come as a stream the probes can
    /// see, not a lump per burst, while batches stay as large with three processes as with one
    /// (each round trip costs the database more than a document does); at least one; at most
    /// the burst. Paid at this process's share, a batch then takes `span` × members.
    pub fn batch_hint(&self, span: Duration) -> usize {
        let members = self.inner.members.load(Ordering::Relaxed).max(1) as f64;
        let span = self.rate() * members * span.as_secs_f64();
        (span.ceil() as usize).clamp(1, self.inner.burst.get() as usize)
    }

    /// Paces at `total / members`: this process's share of the queue's budget.
    pub fn set_share(&self, total: f64, members: u64) {
        let members = members.max(1);
        self.inner.members.store(members, Ordering::Relaxed);
        self.set_rate(total / members as f64);
    }

    /// Paces from now on at `rate`. Unchanged rates keep the current bucket (and its credit).
    pub fn set_rate(&self, rate: f64) {
        let rate = rate.max(MIN_RATE);
        if (self.rate() - rate).abs() <= f64::EPSILON * rate {
            return;
        }
        let credit = self
            .inner
            .current
            .load()
            .take_credit(self.inner.burst, &self.inner.clock);
        let paced = Paced::new(rate, self.inner.burst, &self.inner.clock, credit);
        self.inner.current.store(Arc::new(paced));
        self.inner.swapped.notify_waiters();
    }

    /// Counts documents the worker actually took under this budget.
    pub fn record_used(&self, documents: usize) {
        self.inner
            .used
            .fetch_add(documents as u64, Ordering::Relaxed);
    }

    /// Documents taken since the last call.
    pub fn take_used(&self) -> u64 {
        self.inner.used.swap(0, Ordering::Relaxed)
    }

    /// Waits until `documents` may be written; returns how long it waited.
    pub async fn acquire(&self, documents: usize) -> Duration {
        let started = Instant::now();
        let mut left = documents;
        while left > 0 {
            let chunk = left.min(self.inner.burst.get() as usize);
            self.acquire_chunk(chunk).await;
            left -= chunk;
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

    /// Empties this limiter and returns the cells it held. Carried into the next limiter, they
    /// keep waiters' progress across a rate change: otherwise a waiter for a batch that needs a
    /// whole interval's budget would start over at every change and could wait forever.
    fn take_credit(&self, burst: NonZeroU32, clock: &DefaultClock) -> u32 {
        match self.limiter.check_n(burst) {
            Ok(Ok(())) => burst.get(),
            Ok(Err(not_until)) => {
                let missing = not_until.wait_time_from(clock.now()).as_secs_f64() * self.rate;
                burst.get().saturating_sub(missing.ceil() as u32)
            }
            Err(_) => 0,
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
        let throttle = Throttle::new(1.0, 100);
        // A fresh throttle starts empty, and a swapped-in limiter holds only what was earned.
        assert!(empty(&throttle));
        throttle.set_rate(2.0);
        assert!(empty(&throttle));
        assert_eq!(throttle.rate(), 2.0);
    }

    #[tokio::test]
    async fn a_waiter_moves_to_a_faster_rate() {
        // At 0.01 documents/s a batch of 10 would wait 1000 s; the swap must free it.
        let throttle = Throttle::new(0.01, 10);
        let waiter = tokio::spawn({
            let throttle = throttle.clone();
            async move { throttle.acquire(10).await }
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
        let throttle = Throttle::new(1_000.0, 100);
        let (burst, clock) = (throttle.inner.burst, &throttle.inner.clock);
        // A limiter holding 60 cells, as if 60 ms had passed unused at 1,000/s.
        throttle
            .inner
            .current
            .store(Arc::new(Paced::new(1_000.0, burst, clock, 60)));
        throttle.set_rate(0.001);
        let credit = throttle.inner.current.load().take_credit(burst, clock);
        assert!((60..=62).contains(&credit), "carried over: {credit}");
    }

    #[test]
    fn batches_carry_a_span_of_budget_within_one_and_the_burst() {
        let span = Duration::from_millis(500);
        let throttle = Throttle::new(100.0, 500);
        assert_eq!(throttle.batch_hint(span), 50);
        throttle.set_rate(0.5);
        assert_eq!(throttle.batch_hint(span), 1);
        throttle.set_rate(1e6);
        assert_eq!(throttle.batch_hint(span), 500);
        // Three processes at a third each: batches as large as one process's, paid slower.
        throttle.set_share(300.0, 3);
        assert_eq!(throttle.rate(), 100.0);
        assert_eq!(throttle.batch_hint(span), 150);
    }

    #[tokio::test]
    async fn batches_larger_than_the_burst_pass_in_pieces() {
        let throttle = Throttle::new(1_000_000.0, 4);
        throttle.acquire(10).await;
        throttle.acquire(0).await;
    }
}
