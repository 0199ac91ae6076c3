//! tidegate: a load-aware adaptive batch processor.
//!
//! Jobs wait in Redis in BullMQ v5's layout; workers take them hundreds at a time, turn each
//! batch into MongoDB bulk writes, and pace those writes with a token bucket whose rate a
//! feedback controller sets from the database's own load.
//!
//! ```text
//!  cron (tz) ──plan──▶ enqueue ─┐            ┌──▶ completed / failed (Redis, retained N)
//!  HTTP/CLI  ──────────────────▶│ Redis queue │
//!                               └──pull batch─┴─▶ worker ──plan writes──▶ MongoDB bulk write
//!                                                   ▲                           │
//!                           governor token bucket ──┘        serverStatus ◀─────┘
//!                                    ▲                            │
//!                                    └──── controller ◀── probe ──┘
//! ```
//!
//! Modules, in the order data moves: [`config`] (settings), [`queue`] (Redis), [`worker`],
//! [`pipeline`], [`store`] (MongoDB), [`control`] (load control), [`runs`] and [`schedule`],
//! [`notify`] (run reports), [`http`] (metrics and health), [`telemetry`] (logs and the metric
//! catalogue), [`circuit`] (whether a dependency can be reached), [`engine`] (a process: its
//! parts connected, its pipelines and daily application registered, its life cycle).
//!
//! A program of its own is a few lines ([`engine::main`]):
//!
//! ```no_run
//! # use tidegate::pipeline::{Outcome, Pipeline};
//! # struct Visits;
//! # impl Pipeline for Visits {
//! #     fn name(&self) -> &str { "visits" }
//! #     async fn process(&self, jobs: &[tidegate::queue::Job]) -> Vec<Outcome> { Vec::new() }
//! # }
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     tidegate::engine::main(|engine| engine.pipeline(&["visit"], Visits)).await
//! }
//! ```
//!
//! It gets what `tidegate run` has: `/metrics`, `/healthz`, `/readyz`, the back-office, the
//! database's shared write budget, runs and their reports, the schedule of a daily
//! application, graceful shutdown; every `TIDEGATE_*` setting applies.

pub mod circuit;
pub mod config;
pub mod control;
pub mod engine;
pub mod http;
pub mod notify;
pub mod pipeline;
pub mod progress;
pub mod queue;
pub mod redact;
pub mod retry;
pub mod runs;
pub mod schedule;
pub mod store;
pub mod telemetry;
pub mod worker;
