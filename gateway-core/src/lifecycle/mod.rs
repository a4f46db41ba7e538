//! The device lifecycle: a LAN device registers (over MQTT with the shared provisioning identity,
//! or over HTTP), waits as `pending_claim` with a one-time claim code, is claimed by a person (or
//! approved from the pairing inbox), receives its own credentials, and can later be deactivated.
//! Every step is written to the audit log. docs/protocol.md specifies the device's side.

pub mod claim_code;
pub mod db;
pub mod registration;
mod service;

pub use registration::{Capabilities, FieldError, Registration};
pub use service::{
    ensure_provisioning_identity, run, service_username, wants, Catalog, ClaimError, Lifecycle, LifecycleStats, Reply,
};
