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
//! catalogue), [`circuit`] (whether a dependency can be reached), [`app`] (process life cycle).

pub mod app;
pub mod circuit;
pub mod config;
pub mod control;
pub mod http;
pub mod notify;
pub mod pipeline;
pub mod progress;
pub mod queue;
pub mod redact;
pub mod retry;
pub mod runs;
pub mod schedule;
pub mod score;
pub mod store;
pub mod telemetry;
pub mod worker;
