//! Gatehouse gateway core: every capability of the gateway, with no GUI dependency.
//! See docs/ARCHITECTURE.md for the map.

pub mod bus;
pub mod config;
pub mod dedup;
pub mod pipeline;
pub mod reading;
pub mod ruuvi;
pub mod simulator;
pub mod store;
