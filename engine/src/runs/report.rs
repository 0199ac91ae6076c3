//! What a run's messages say: the report when it ends (pipeline, date, jobs, succeeded, failed,
//! wall time, the database's CPU over the run, the commonest failure reasons), an alert when
//! jobs failed, and the alert when it stalls. Pure: the text from the record and the numbers.

use std::time::Duration;

use serde_json::{Value, json};

use super::RunRecord;

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
pub(crate) fn payload(report: &RunReport) -> Value {
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
pub(crate) fn stall_payload(run: &RunRecord, finished: u64, idle: Duration) -> Value {
    let jobs = run.planned.unwrap_or(0);
    json!({ "text": format!(
        ":warning: tidegate run {} STALLED: {finished} of {jobs} jobs finished, none in the last {}\n\
         pipeline *{}*, date *{}*, trigger {}; check the workers, the queue (paused?) and the limiting signal",
        run.id,
        humantime::format_duration(Duration::from_secs(idle.as_secs())),
        run.pipeline, run.date, run.trigger
    ) })
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
