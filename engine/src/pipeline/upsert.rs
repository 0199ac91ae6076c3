//! The generic upsert pipeline: a job names a collection, the key fields and a document; every
//! job of a batch for the same collection goes into one bulk `update` (upserts, unordered).
//!
//! Job data: `{"collection": "daily_scores", "key": ["userId", "date"],
//! "document": {"userId": "u1", "date": "2026-11-24", "score": 42}}`, and optionally the
//! `runId` of the run the job counts in (read by the worker, not here). The filter is the
//! document's key fields; the update `$set`s the whole document, so repeating a job changes
//! nothing (at-least-once delivery stays harmless).

use std::collections::BTreeMap;

use mongodb::bson::{Document, doc};
use serde::Deserialize;

use crate::pipeline::{Outcome, Outcomes, Pipeline};
use crate::queue::Job;
use crate::store::{Store, Upsert};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertJob {
    collection: String,
    key: Vec<String>,
    document: serde_json::Map<String, serde_json::Value>,
    /// Accepted so that any job may belong to a run; the worker counts it there.
    #[serde(rename = "runId")]
    _run_id: Option<String>,
}

/// Turns one job's data into its collection and upsert, or says why it cannot be written.
pub fn plan(job: &Job) -> Result<(String, Upsert), String> {
    let data: UpsertJob = job.data().map_err(|e| format!("invalid upsert job: {e}"))?;
    check_collection(&data.collection)?;
    if data.key.is_empty() {
        return Err("`key` names no field".into());
    }
    let document = mongodb::bson::to_document(&data.document)
        .map_err(|e| format!("`document` cannot be stored: {e}"))?;
    let mut filter = Document::new();
    for field in &data.key {
        let value = document
            .get(field)
            .ok_or_else(|| format!("key field {field:?} is not in the document"))?;
        filter.insert(field.clone(), value.clone());
    }
    Ok((
        data.collection,
        Upsert {
            filter,
            update: doc! { "$set": document },
        },
    ))
}

fn check_collection(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('$') || name.contains('\0') || name.starts_with("system.") {
        return Err(format!(
            "{name:?} is not a collection name tidegate writes to"
        ));
    }
    Ok(())
}

/// The job name this pipeline answers to.
pub const JOB_NAMES: &[&str] = &["upsert"];

pub struct UpsertPipeline {
    store: Store,
}

impl UpsertPipeline {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl Pipeline for UpsertPipeline {
    fn name(&self) -> &str {
        "upsert"
    }

    async fn process(&self, jobs: &[Job]) -> Vec<Outcome> {
        let mut outcomes = Outcomes::new(jobs.len());
        let mut by_collection: BTreeMap<String, (Vec<usize>, Vec<Upsert>)> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            match plan(job) {
                Ok((collection, upsert)) => {
                    let entry = by_collection.entry(collection).or_default();
                    entry.0.push(i);
                    entry.1.push(upsert);
                }
                Err(reason) => outcomes.set(i, Outcome::permanent(reason)),
            }
        }
        for (collection, (indexes, upserts)) in by_collection {
            let (results, _) = self.store.upsert_many(&collection, &upserts).await;
            outcomes.written(
                indexes,
                results,
                |_| serde_json::json!({ "collection": collection }),
            );
        }
        outcomes.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::JobOptions;

    fn job(data: &str) -> Job {
        Job {
            id: "1".into(),
            name: "upsert".into(),
            raw_data: data.into(),
            opts: JobOptions::default(),
            timestamp: 0,
            attempts_made: 0,
        }
    }

    #[test]
    fn filter_is_the_key_fields_and_update_sets_the_document() {
        let (coll, upsert) = plan(&job(
            r#"{"collection":"scores","key":["userId","date"],"document":{"userId":"u1","date":"2026-11-24","score":4},"runId":"2026-11-24-r1"}"#,
        ))
        .expect("valid");
        assert_eq!(coll, "scores");
        assert_eq!(upsert.filter, doc! { "userId": "u1", "date": "2026-11-24" });
        assert_eq!(
            upsert.update,
            doc! { "$set": { "userId": "u1", "date": "2026-11-24", "score": 4_i64 } }
        );
    }

    #[test]
    fn malformed_jobs_say_why() {
        let cases = [
            ("not json", "invalid upsert job"),
            (
                r#"{"collection":"c","key":[],"document":{}}"#,
                "names no field",
            ),
            (
                r#"{"collection":"c","key":["id"],"document":{"x":1}}"#,
                "\"id\" is not in the document",
            ),
            (
                r#"{"collection":"system.users","key":["a"],"document":{"a":1}}"#,
                "not a collection name",
            ),
            (
                r#"{"collection":"c","key":["a"],"document":{"a":1},"extra":1}"#,
                "unknown field",
            ),
        ];
        for (data, reason) in cases {
            let err = plan(&job(data)).expect_err(data);
            assert!(err.contains(reason), "{data}: {err}");
        }
    }
}
