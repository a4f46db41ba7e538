//! Gatehouse gateway core: every capability of the gateway, with no GUI dependency.
//! See docs/ARCHITECTURE.md for the map.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod ble;
pub mod broker;
pub mod bus;
pub mod clock;
pub mod config;
pub mod dedup;
pub mod device_config;
pub mod gateway;
pub mod ha_import;
pub mod health;
pub mod homeassistant;
pub mod launch;
pub mod lifecycle;
pub mod lockout;
pub mod logging;
pub mod memory;
pub mod motion;
pub mod origin;
pub mod pipeline;
pub mod private_file;
pub mod reading;
pub mod receivers;
pub mod registry;
pub mod ruuvi;
pub mod ruuvi_gateway;
pub mod simulator;
pub mod store;
pub mod tags;
pub mod tasks;
pub mod topics;
pub mod ui_settings;
pub mod upstream;
