//! Bluetooth LE: the local scanner (btleplug) that hears Ruuvi tags and feeds their advertisements
//! into the pipeline, and its status as the API and the health topic show it.
//!
//! The scanner itself is in `scanner.rs`; when it steps in on a quiet scan is decided by the pure
//! `watchdog.rs`. This file holds what both report into: [`BleStatus`], one shared object that
//! answers "is Bluetooth working, and if not, why" at any time.

mod scanner;
pub mod watchdog;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::reading::now_ms;
use crate::ruuvi::Mac;

pub use scanner::{manufacturer_advertisement, run, Fatal};

/// The Bluetooth SIG company identifier of Ruuvi Innovations.
pub const RUUVI_COMPANY_ID: u16 = 0x0499;

/// How long a tag counts as "heard" in the status after its last advertisement.
const TAG_HEARD_WINDOW_MS: i64 = 5 * 60_000;

/// Seconds over which the advertisement rate is averaged.
const RATE_WINDOW_S: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScannerState {
    /// `ble.enabled = false` or `--no-ble`.
    Disabled,
    Starting,
    /// No usable adapter or no BlueZ; retried with backoff while the gateway keeps running.
    Unavailable,
    Scanning,
    /// The adapter was switched off; scanning resumes when it is switched on again.
    PoweredOff,
    /// A watchdog step is under way.
    Recovering,
    /// Every recovery step failed; the process exits so that its supervisor restarts it.
    Failed,
    /// Paused by the user (the desktop app's tray); resumes when they say so.
    Paused,
}

/// The user's "pause scanning" switch. Shared by the Bluetooth scanner and the simulated tags
/// (which stand in for it), so that pausing works the same with or without an adapter.
#[derive(Debug, Clone)]
pub struct ScanSwitch(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for ScanSwitch {
    fn default() -> Self {
        ScanSwitch(Arc::new(tokio::sync::watch::Sender::new(false)))
    }
}

impl ScanSwitch {
    pub fn set_paused(&self, paused: bool) {
        self.0.send_if_modified(|current| std::mem::replace(current, paused) != paused);
    }

    pub fn is_paused(&self) -> bool {
        *self.0.borrow()
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.subscribe()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recoveries {
    /// Scan stopped and started again because no Ruuvi advertisement arrived in time.
    pub scan_restarts: u64,
    /// A fresh btleplug manager (new D-Bus connection) after scan restarts did not help.
    pub new_managers: u64,
    /// Scans restarted after the adapter was switched off and on.
    pub power_cycles: u64,
    /// Sessions that ended on an error (adapter gone, D-Bus lost) and were started again.
    pub reconnects: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BleReport {
    pub state: ScannerState,
    /// One sentence for people: what is happening and, if something is wrong, what to do.
    pub message: String,
    pub adapter: Option<String>,
    pub scanning: bool,
    pub adverts_per_second: f64,
    /// Ruuvi advertisements received since start.
    pub advertisements: u64,
    /// Manufacturer-data advertisements of other vendors (ignored).
    pub other_advertisements: u64,
    /// Ruuvi advertisements dropped because the pipeline was full (should stay 0).
    pub dropped_queue_full: u64,
    pub last_advert_at: Option<i64>,
    /// Ruuvi tags heard in the last five minutes.
    pub tags_heard: usize,
    pub recoveries: Recoveries,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// The scanner's live status; cheap to update from the event loop, read by the API.
#[derive(Debug)]
pub struct BleStatus {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: ScannerState,
    message: String,
    adapter: Option<String>,
    advertisements: u64,
    other_advertisements: u64,
    dropped_queue_full: u64,
    last_advert_at: Option<i64>,
    tags: HashMap<Mac, i64>,
    /// Adverts per second for the last RATE_WINDOW_S seconds, indexed by second % window.
    rate: [(i64, u32); RATE_WINDOW_S],
    recoveries: Recoveries,
    errors: u64,
    last_error: Option<String>,
}

impl BleStatus {
    pub fn new(enabled: bool) -> Arc<BleStatus> {
        let (state, message) = if enabled {
            (ScannerState::Starting, "looking for a Bluetooth adapter".to_string())
        } else {
            (
                ScannerState::Disabled,
                "Bluetooth is disabled (ble.enabled = false or --no-ble); remote receivers and the simulator still work"
                    .to_string(),
            )
        };
        Arc::new(BleStatus {
            inner: Mutex::new(Inner {
                state,
                message,
                adapter: None,
                advertisements: 0,
                other_advertisements: 0,
                dropped_queue_full: 0,
                last_advert_at: None,
                tags: HashMap::new(),
                rate: [(0, 0); RATE_WINDOW_S],
                recoveries: Recoveries::default(),
                errors: 0,
                last_error: None,
            }),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn set_state(&self, state: ScannerState, message: impl Into<String>) {
        self.with(|s| {
            s.state = state;
            s.message = message.into();
        });
    }

    pub fn state(&self) -> ScannerState {
        self.with(|s| s.state)
    }

    pub fn last_advert_at(&self) -> Option<i64> {
        self.with(|s| s.last_advert_at)
    }

    pub(crate) fn set_adapter(&self, adapter: Option<String>) {
        self.with(|s| s.adapter = adapter);
    }

    pub(crate) fn error(&self, error: impl Into<String>) {
        self.with(|s| {
            s.errors += 1;
            s.last_error = Some(error.into());
        });
    }

    pub(crate) fn recovered(&self, what: impl FnOnce(&mut Recoveries)) {
        self.with(|s| what(&mut s.recoveries));
    }

    pub(crate) fn ruuvi_advert(&self, mac: Mac, at_ms: i64, queued: bool) {
        self.with(|s| {
            s.advertisements += 1;
            if !queued {
                s.dropped_queue_full += 1;
            }
            s.last_advert_at = Some(at_ms);
            s.tags.insert(mac, at_ms);
            let second = at_ms.div_euclid(1000);
            let slot = &mut s.rate[second.rem_euclid(RATE_WINDOW_S as i64) as usize];
            if slot.0 != second {
                *slot = (second, 0);
            }
            slot.1 += 1;
            if s.tags.len() > 64 && s.advertisements % 1024 == 0 {
                s.tags.retain(|_, seen| at_ms - *seen <= TAG_HEARD_WINDOW_MS);
            }
        });
    }

    pub(crate) fn other_advert(&self) {
        self.with(|s| s.other_advertisements += 1);
    }

    pub fn report(&self) -> BleReport {
        let now = now_ms();
        self.with(|s| {
            let this_second = now.div_euclid(1000);
            // Whole seconds only: the current one is still filling up.
            let counted: u32 = s
                .rate
                .iter()
                .filter(|(second, _)| *second < this_second && this_second - *second <= RATE_WINDOW_S as i64)
                .map(|(_, n)| n)
                .sum();
            BleReport {
                state: s.state,
                message: s.message.clone(),
                adapter: s.adapter.clone(),
                scanning: s.state == ScannerState::Scanning,
                adverts_per_second: f64::from(counted) / RATE_WINDOW_S as f64,
                advertisements: s.advertisements,
                other_advertisements: s.other_advertisements,
                dropped_queue_full: s.dropped_queue_full,
                last_advert_at: s.last_advert_at,
                tags_heard: s.tags.values().filter(|seen| now - **seen <= TAG_HEARD_WINDOW_MS).count(),
                recoveries: s.recoveries.clone(),
                errors: s.errors,
                last_error: s.last_error.clone(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_whole_seconds_of_the_last_window() {
        let status = BleStatus::new(true);
        let now = now_ms();
        let tag = Mac([1, 2, 3, 4, 5, 6]);
        status.ruuvi_advert(Mac([9; 6]), now - 20 * 60_000, false);
        for i in 0..20 {
            // two adverts per second over the last ten whole seconds
            status.ruuvi_advert(tag, now - 10_000 + i * 500, true);
        }
        let report = status.report();
        assert!((1.5..=2.0).contains(&report.adverts_per_second), "{}", report.adverts_per_second);
        assert_eq!(report.advertisements, 21);
        assert_eq!(report.dropped_queue_full, 1);
        assert_eq!(report.tags_heard, 1, "the second tag was last heard 20 min ago");
    }

    #[test]
    fn disabled_says_so() {
        let report = BleStatus::new(false).report();
        assert_eq!(report.state, ScannerState::Disabled);
        assert!(!report.scanning);
        assert!(report.message.contains("disabled"));
    }
}
