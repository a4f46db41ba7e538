//! Gatehouse gateway core: every capability of the gateway, with no GUI dependency.
//! See docs/ARCHITECTURE.md for the map.

pub mod ruuvi;
