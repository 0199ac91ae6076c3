//! Run reports to a Slack-compatible incoming webhook: one message when a run ends (pipeline,
//! date, jobs, succeeded, failed, wall time, the database's CPU over the run, the commonest
//! failure reasons), flagged as an alert when jobs failed, and an alert when a run stalls. Sent with retries and backoff; the
//! webhook URL is a secret and never reaches a log line (request errors are logged without it).

use std::time::Duration;

use serde_json::{Value, json};

use crate::runs::RunRecord;

/// What one run's report says.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub run: RunRecord,
    /// Mean and peak database CPU (percent of one core) over the run, as the probe saw it.
    pub cpu: Option<(f64, f64)>,
    /// The commonest failure reasons, most frequent first, with their counts.
    pub reasons: Vec<(String, u64)>,
}

/// The Slack message: `text` (shown by every Slack-compatible receiver and in notifications).
pub fn payload(report: &RunReport) -> Value {
    let run = &report.run;
    let jobs = run.planned.unwrap_or(0);
    let failed = run.failed > 0;
    let headline = if failed {
        format!(
            ":rotating_light: tidegate run {} FAILED: {} of {jobs} jobs failed",
            run.id, run.failed
        )
    } else {
        format!(":white_check_mark: tidegate run {} succeeded", run.id)
    };
    let wall = run.wall().map_or("unfinished".to_owned(), |w| {
        format!("{:.1} s", w.as_secs_f64())
    });
    let cpu = report
        .cpu
        .map_or("not measured".to_owned(), |(mean, peak)| {
            format!("mean {mean:.0}%, peak {peak:.0}%")
        });
    let mut lines = vec![
        headline,
        format!(
            "pipeline *{}*, date *{}*, trigger {}",
            run.pipeline, run.date, run.trigger
        ),
        format!(
            "jobs {jobs}: {} succeeded, {} failed, {} skipped",
            run.completed, run.failed, run.skipped
        ),
        format!("wall time {wall}; database CPU {cpu}"),
    ];
    if !report.reasons.is_empty() {
        lines.push("top failure reasons:".to_owned());
        for (reason, count) in &report.reasons {
            lines.push(format!("• {count}× {reason}"));
        }
    }
    json!({ "text": lines.join("\n") })
}

/// The alert for a run that stopped moving: `finished` of its jobs done, none for `idle`.
pub fn stall_payload(run: &RunRecord, finished: u64, idle: Duration) -> Value {
    let jobs = run.planned.unwrap_or(0);
    json!({ "text": format!(
        ":warning: tidegate run {} STALLED: {finished} of {jobs} jobs finished, none in the last {}\n\
         pipeline *{}*, date *{}*, trigger {}; check the workers, the queue (paused?) and the limiting signal",
        run.id,
        humantime::format_duration(Duration::from_secs(idle.as_secs())),
        run.pipeline, run.date, run.trigger
    ) })
}

/// Posts reports to one webhook.
#[derive(Clone)]
pub struct Notifier {
    http: reqwest::Client,
    url: String,
    /// Wait before the first retry; doubled for each later one.
    backoff: Duration,
}

/// Tries per message, the first included.
const ATTEMPTS: u32 = 4;

impl Notifier {
    pub fn new(url: String) -> Result<Self, reqwest::Error> {
        Self::with_backoff(url, Duration::from_secs(1))
    }

    pub fn with_backoff(url: String, backoff: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self { http, url, backoff })
    }

    /// Sends `message`, retrying network errors, 429 and 5xx with doubling waits. Returns
    /// whether it was delivered; failures are logged, never returned: a report must not fail
    /// the run it reports on.
    pub async fn send(&self, message: &Value) -> bool {
        let mut wait = self.backoff;
        for attempt in 1..=ATTEMPTS {
            let retryable = match self.http.post(&self.url).json(message).send().await {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => {
                    let status = r.status();
                    tracing::warn!(%status, attempt, "the webhook refused the run report");
                    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    tracing::warn!(error = %e.without_url(), attempt, "cannot reach the webhook");
                    true
                }
            };
            if !retryable || attempt == ATTEMPTS {
                break;
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        tracing::error!("the run report was not delivered");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(failed: i64) -> RunRecord {
        RunRecord {
            id: "2026-11-24-r1".into(),
            pipeline: "score".into(),
            date: "2026-11-24".into(),
            trigger: "schedule".into(),
            started_at: mongodb::bson::DateTime::from_millis(1_000),
            planned: Some(100),
            skipped: 2,
            completed: 100 - failed,
            failed,
            ended_at: Some(mongodb::bson::DateTime::from_millis(13_500)),
            outcome: Some(if failed > 0 { "failed" } else { "succeeded" }.into()),
        }
    }

    #[test]
    fn a_failed_run_is_an_alert_with_its_reasons() {
        let report = RunReport {
            run: run(3),
            cpu: Some((142.4, 201.0)),
            reasons: vec![("userId missing".into(), 2), ("timeout".into(), 1)],
        };
        let text = payload(&report)["text"].as_str().expect("text").to_owned();
        assert!(text.starts_with(":rotating_light: tidegate run 2026-11-24-r1 FAILED: 3 of 100"));
        for part in [
            "pipeline *score*, date *2026-11-24*",
            "97 succeeded, 3 failed, 2 skipped",
            "wall time 12.5 s",
            "database CPU mean 142%, peak 201%",
            "• 2× userId missing",
            "• 1× timeout",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
    }

    #[test]
    fn a_clean_run_says_so_and_admits_what_was_not_measured() {
        let report = RunReport {
            run: run(0),
            cpu: None,
            reasons: Vec::new(),
        };
        let text = payload(&report)["text"].as_str().expect("text").to_owned();
        assert!(text.starts_with(":white_check_mark: tidegate run 2026-11-24-r1 succeeded"));
        assert!(text.contains("database CPU not measured"));
        assert!(!text.contains("failure reasons"));
    }
}
