//! Load control: probes read the database's load, a pure controller turns it into a write rate,
//! the shared budget splits that rate among the processes working a queue, and a throttle paces
//! each process's writes; or, for a BullMQ queue others work, the queue's global rate limit
//! (`govern`). The plant and the simulation are models of a database, for
//! virtual-time tests and `tidegate simulate`.

pub mod budget;
pub mod controller;
pub mod cost;
pub mod govern;
pub mod law;
pub mod pacer;
pub mod plant;
pub mod probe;
pub mod server_status;
pub mod shards;
pub mod simulate;
pub mod throttle;

/// A control script with Redis' clock read at its top (`clock.lua`: `now`, `now_ms`).
fn clocked(body: &str) -> redis::Script {
    redis::Script::new(&format!("{}\n{body}", include_str!("clock.lua")))
}
