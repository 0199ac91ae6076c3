//! The job model: what a producer adds ([`NewJob`], [`JobOptions`] in BullMQ's JSON spelling),
//! what a worker takes ([`Job`]), and the pure rules derived from the options (retention,
//! backoff).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A job to add. `data` is any JSON; BullMQ stores it as a JSON string in the job hash.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub name: String,
    pub data: serde_json::Value,
    pub opts: JobOptions,
}

impl NewJob {
    pub fn new(name: impl Into<String>, data: serde_json::Value) -> Self {
        Self {
            name: name.into(),
            data,
            opts: JobOptions::default(),
        }
    }

    pub fn with_opts(mut self, opts: JobOptions) -> Self {
        self.opts = opts;
        self
    }
}

/// The subset of BullMQ's job options tidegate acts on, in BullMQ's JSON names. Options a
/// BullMQ producer sets that are not listed here are kept in the job hash untouched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobOptions {
    /// Caller-chosen id: a job with an id already present is not added again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Total tries, first included (BullMQ's default: 1, no retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Milliseconds before the job may run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay: u64,
    /// 0 = none; otherwise lower runs first, after all jobs without a priority.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub priority: u32,
    /// Take this job before those already waiting.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lifo: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_on_complete: Option<Keep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_on_fail: Option<Keep>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// BullMQ's `removeOnComplete` / `removeOnFail`: `true` removes at once, `false` keeps all, a
/// number keeps that many newest, `{count, age}` keeps at most `count` and none older than `age`
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Keep {
    Flag(bool),
    Count(i64),
    Policy {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        age: Option<u64>,
    },
}

/// What to keep of finished jobs in one state. `count: Some(0)` removes a job as it finishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Retention {
    pub count: Option<u64>,
    pub age: Option<Duration>,
}

impl Retention {
    pub const KEEP_ALL: Retention = Retention {
        count: None,
        age: None,
    };

    pub fn keep_last(count: u64) -> Self {
        Self {
            count: Some(count),
            age: None,
        }
    }
}

impl From<Keep> for Retention {
    fn from(keep: Keep) -> Self {
        // A negative count means "no limit" in BullMQ.
        let count = |n: i64| u64::try_from(n).ok();
        match keep {
            Keep::Flag(true) => Retention::keep_last(0),
            Keep::Flag(false) => Retention::KEEP_ALL,
            Keep::Count(n) => Retention {
                count: count(n),
                age: None,
            },
            Keep::Policy { count: n, age } => Retention {
                count: n.and_then(count),
                age: age.map(Duration::from_secs),
            },
        }
    }
}

/// BullMQ's `backoff`: a number is a fixed delay in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Backoff {
    Millis(u64),
    Spec {
        #[serde(rename = "type")]
        kind: BackoffKind,
        #[serde(default)]
        delay: u64,
        /// 0..=1: the share of the delay that is randomised.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jitter: Option<f64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    Fixed,
    Exponential,
}

impl Backoff {
    /// The wait before the next try, after `failures` failed attempts (≥ 1). `random` is a
    /// uniform sample from [0, 1), passed in so the rule stays pure and testable.
    pub fn delay(&self, failures: u32, random: f64) -> Duration {
        let (kind, base, jitter) = match *self {
            Backoff::Millis(ms) => (BackoffKind::Fixed, ms, 0.0),
            Backoff::Spec {
                kind,
                delay,
                jitter,
            } => (kind, delay, jitter.unwrap_or(0.0)),
        };
        let full = match kind {
            BackoffKind::Fixed => base as f64,
            BackoffKind::Exponential => {
                let exponent = failures.saturating_sub(1).min(52) as i32;
                2f64.powi(exponent) * base as f64
            }
        };
        // Jitter moves part of the delay to a random point below it, spreading retries.
        let jitter = jitter.clamp(0.0, 1.0);
        let ms = full * (1.0 - jitter) + full * jitter * random.clamp(0.0, 1.0);
        Duration::from_millis(ms.min(u64::MAX as f64 / 2.0) as u64)
    }
}

/// A job taken into active by a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub name: String,
    /// The job's data as stored: a JSON document (see [`Job::data`]).
    pub raw_data: String,
    pub opts: JobOptions,
    /// When the job was added (ms since the epoch).
    pub timestamp: u64,
    /// Attempts that already failed before this one.
    pub attempts_made: u32,
}

impl Job {
    /// The job's data as `T`; an error here means the job is malformed.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.raw_data)
    }

    /// Total attempts allowed (at least 1).
    pub(crate) fn max_attempts(&self) -> u32 {
        self.opts.attempts.unwrap_or(1).max(1)
    }
}

/// Why a caller-given job id cannot be used: BullMQ's rules (not empty, no ':', not an
/// integer), and not the name of one of the queue's own keys, which the job's hash would then
/// overwrite or be read from.
pub(crate) fn check_custom_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("job id is empty".into());
    }
    if id.contains(':') {
        return Err(format!("job id {id:?} contains ':'"));
    }
    if super::keys::is_reserved(id) {
        return Err(format!(
            "job id {id:?} is the name of one of the queue's own keys ({})",
            super::keys::RESERVED.join(", ")
        ));
    }
    if id.parse::<u64>().is_ok() {
        return Err(format!(
            "job id {id:?} is an integer, which would collide with generated ids"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn options_round_trip_in_bullmq_spelling() {
        let json = r#"{"jobId":"score-2026-11-24-u1","attempts":3,"backoff":{"type":"exponential","delay":1000},"removeOnComplete":50000,"removeOnFail":{"age":86400},"lifo":true}"#;
        let opts: JobOptions = serde_json::from_str(json).expect("parse");
        assert_eq!(opts.attempts, Some(3));
        assert_eq!(opts.remove_on_complete, Some(Keep::Count(50000)));
        assert_eq!(
            Retention::from(opts.remove_on_fail.expect("set")),
            Retention {
                count: None,
                age: Some(Duration::from_secs(86400))
            }
        );
        let back = serde_json::to_string(&opts).expect("serialize");
        let again: JobOptions = serde_json::from_str(&back).expect("parse again");
        assert_eq!(opts, again);
    }

    #[test]
    fn unknown_options_are_ignored_and_defaults_are_empty() {
        let opts: JobOptions =
            serde_json::from_str(r#"{"kl":10,"de":{"id":"x"},"telemetry":{}}"#).expect("parse");
        assert_eq!(opts, JobOptions::default());
        assert_eq!(
            serde_json::to_string(&JobOptions::default()).expect("json"),
            "{}"
        );
    }

    #[test]
    fn keep_flags_and_counts() {
        assert_eq!(Retention::from(Keep::Flag(true)), Retention::keep_last(0));
        assert_eq!(Retention::from(Keep::Flag(false)), Retention::KEEP_ALL);
        assert_eq!(Retention::from(Keep::Count(-1)), Retention::KEEP_ALL);
    }

    #[test]
    fn backoff_rules() {
        let fixed = Backoff::Millis(500);
        assert_eq!(fixed.delay(3, 0.9), Duration::from_millis(500));
        let exp = Backoff::Spec {
            kind: BackoffKind::Exponential,
            delay: 1000,
            jitter: None,
        };
        assert_eq!(exp.delay(1, 0.5), Duration::from_millis(1000));
        assert_eq!(exp.delay(3, 0.5), Duration::from_millis(4000));
    }

    #[test]
    fn custom_ids_follow_bullmq_rules() {
        assert!(check_custom_id("score-2026-11-24-u1").is_ok());
        assert!(check_custom_id("a:b").is_err());
        assert!(check_custom_id("123").is_err());
        assert!(check_custom_id("").is_err());
    }

    #[test]
    fn custom_ids_never_name_a_queue_key() {
        for name in crate::queue::keys::RESERVED {
            let refused = check_custom_id(name).expect_err(name);
            assert!(refused.contains("queue's own keys"), "{refused}");
        }
        assert!(check_custom_id("meta-1").is_ok());
        assert!(check_custom_id("waits").is_ok());
    }

    proptest! {
        #[test]
        fn jittered_delay_stays_between_the_floor_and_the_full_delay(
            base in 0u64..10_000_000, failures in 1u32..80, jitter in 0.0f64..=1.0, random in 0.0f64..1.0,
        ) {
            let backoff = Backoff::Spec { kind: BackoffKind::Exponential, delay: base, jitter: Some(jitter) };
            let full = Backoff::Spec { kind: BackoffKind::Exponential, delay: base, jitter: None }.delay(failures, 0.0);
            let got = backoff.delay(failures, random);
            prop_assert!(got <= full);
            prop_assert!(got.as_secs_f64() >= full.as_secs_f64() * (1.0 - jitter) - 0.002);
        }
    }
}
