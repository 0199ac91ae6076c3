//! Load control: a pure controller that turns database signals into a write rate, a simulated
//! database (the plant) to run it against in virtual time, and `simulate`, the seed's day
//! replayed in virtual time for naive, fixed-rate and controlled strategies. Probes and the
//! governor throttle that connect the controller to a real database come next.

pub mod controller;
pub mod plant;
pub mod simulate;
