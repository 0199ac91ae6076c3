//! Load control: a pure controller that turns database signals into a write rate, and a
//! simulated database (the plant) to run it against in virtual time. Probes and the governor
//! throttle that connect them to a real database come next; `server_status` already reads the
//! probe's signals out of MongoDB's `serverStatus`.

pub mod controller;
pub mod plant;
pub mod server_status;
