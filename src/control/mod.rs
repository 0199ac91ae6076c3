//! Load control: a pure controller that turns database signals into a write rate, and a
//! simulated database (the plant) to run it against in virtual time. Probes and the governor
//! throttle that connect them to a real database come next.

pub mod controller;
pub mod plant;
