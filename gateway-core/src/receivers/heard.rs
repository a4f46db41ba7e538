//! Which receiver hears which tag, and how well: the local adapter, the simulator and every
//! remote Ruuvi Gateway. Fed by the pipeline for every decoded advertisement (duplicates
//! included: a measurement stored once was still heard by each receiver), so the UI can show
//! which receiver hears a tag best. In memory only; it rebuilds within seconds after a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Entries silent for longer than this are forgotten.
const FORGET_AFTER_MS: i64 = 24 * 3_600_000;
/// At most this many (tag, receiver) entries: a receiver posting made-up MACs, or a BLE
/// spoofer rotating addresses, must not grow memory without bound. Beyond it the tag heard
/// longest ago is forgotten.
const MAX_ENTRIES: usize = 20_000;
/// Weight of a new sample in the smoothed RSSI (advertisements vary by several dB each).
const RSSI_SMOOTHING: f64 = 0.2;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hearing {
    pub receiver: String,
    pub rssi: Option<i16>,
    /// Exponentially smoothed RSSI, to rank receivers without flapping.
    pub rssi_smoothed: Option<f64>,
    pub last_heard: i64,
    pub advertisements: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverSummary {
    pub receiver: String,
    /// `ble`, `simulator` or `ruuvi_gateway`.
    pub kind: &'static str,
    /// The account a remote receiver authenticated as.
    pub account: Option<String>,
    /// `http` or `mqtt` for remote receivers.
    pub transport: Option<&'static str>,
    /// What a remote Ruuvi Gateway last said on its `gw_status` topic.
    pub online: Option<bool>,
    pub last_heard: Option<i64>,
    pub advertisements: u64,
    /// Tags this receiver heard in the last five minutes.
    pub tags: usize,
}

#[derive(Debug, Default)]
struct Remote {
    account: Option<String>,
    transport: Option<&'static str>,
    online: Option<bool>,
    last_contact: Option<i64>,
}

#[derive(Debug, Default)]
struct Inner {
    by_device: HashMap<String, HashMap<Arc<str>, Hearing>>,
    remotes: HashMap<Arc<str>, Remote>,
    records: u64,
    /// (tag, receiver) entries in `by_device`.
    entries: usize,
}

#[derive(Debug, Default)]
pub struct HeardBy {
    inner: Mutex<Inner>,
}

pub fn receiver_kind(receiver: &str) -> &'static str {
    if receiver.starts_with("ble:") {
        "ble"
    } else if receiver == "simulator" {
        "simulator"
    } else {
        "ruuvi_gateway"
    }
}

impl HeardBy {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn record(&self, device_id: &str, receiver: &Arc<str>, rssi: Option<i16>, at_ms: i64) {
        self.with(|s| {
            s.records += 1;
            if s.records % 4096 == 0 {
                prune(s, at_ms);
            }
            if !s.by_device.contains_key(device_id) && s.entries >= MAX_ENTRIES {
                evict_oldest(s);
            }
            let receivers = match s.by_device.get_mut(device_id) {
                Some(receivers) => receivers,
                None => s.by_device.entry(device_id.to_string()).or_default(),
            };
            let before = receivers.len();
            receivers.entry(receiver.clone()).or_insert_with(|| Hearing {
                receiver: receiver.to_string(),
                rssi: None,
                rssi_smoothed: None,
                last_heard: at_ms,
                advertisements: 0,
            });
            let added = receivers.len() - before;
            let hearing = receivers.get_mut(receiver).expect("just inserted");
            hearing.advertisements += 1;
            hearing.last_heard = hearing.last_heard.max(at_ms);
            s.entries += added;
            if let Some(rssi) = rssi {
                hearing.rssi = Some(rssi);
                let sample = f64::from(rssi);
                hearing.rssi_smoothed = Some(match hearing.rssi_smoothed {
                    Some(previous) => previous + RSSI_SMOOTHING * (sample - previous),
                    None => sample,
                });
            }
        });
    }

    /// A remote receiver made contact (authenticated message), possibly with its status.
    pub fn contact(&self, receiver: &Arc<str>, account: &str, transport: &'static str, online: Option<bool>, at: i64) {
        self.with(|s| {
            let remote = s.remotes.entry(receiver.clone()).or_default();
            remote.account = Some(account.to_string());
            remote.transport = Some(transport);
            if online.is_some() {
                remote.online = online;
            }
            remote.last_contact = Some(at);
        });
    }

    /// The receivers that heard `device_id`, best (strongest smoothed RSSI) first.
    pub fn for_device(&self, device_id: &str) -> Vec<Hearing> {
        let mut list: Vec<Hearing> =
            self.with(|s| s.by_device.get(device_id).map(|r| r.values().cloned().collect()).unwrap_or_default());
        list.sort_by(|a, b| {
            let rank = |h: &Hearing| h.rssi_smoothed.unwrap_or(f64::NEG_INFINITY);
            rank(b).total_cmp(&rank(a)).then_with(|| a.receiver.cmp(&b.receiver))
        });
        list
    }

    pub fn receivers(&self, now_ms: i64) -> Vec<ReceiverSummary> {
        self.with(|s| {
            let mut summaries: HashMap<Arc<str>, ReceiverSummary> = HashMap::new();
            let blank = |name: &Arc<str>| ReceiverSummary {
                receiver: name.to_string(),
                kind: receiver_kind(name),
                account: None,
                transport: None,
                online: None,
                last_heard: None,
                advertisements: 0,
                tags: 0,
            };
            for receivers in s.by_device.values() {
                for (name, hearing) in receivers {
                    let summary = summaries.entry(name.clone()).or_insert_with(|| blank(name));
                    summary.advertisements += hearing.advertisements;
                    summary.last_heard = summary.last_heard.max(Some(hearing.last_heard));
                    if now_ms - hearing.last_heard <= 5 * 60_000 {
                        summary.tags += 1;
                    }
                }
            }
            for (name, remote) in &s.remotes {
                let summary = summaries.entry(name.clone()).or_insert_with(|| blank(name));
                summary.account = remote.account.clone();
                summary.transport = remote.transport;
                summary.online = remote.online;
                summary.last_heard = summary.last_heard.max(remote.last_contact);
            }
            let mut list: Vec<ReceiverSummary> = summaries.into_values().collect();
            list.sort_by(|a, b| a.receiver.cmp(&b.receiver));
            list
        })
    }
}

fn evict_oldest(s: &mut Inner) {
    let newest = |receivers: &HashMap<Arc<str>, Hearing>| receivers.values().map(|h| h.last_heard).max().unwrap_or(0);
    let oldest = s.by_device.iter().min_by_key(|(_, receivers)| newest(receivers)).map(|(id, _)| id.clone());
    if let Some(id) = oldest {
        if let Some(receivers) = s.by_device.remove(&id) {
            s.entries -= receivers.len();
        }
    }
}

fn prune(s: &mut Inner, now_ms: i64) {
    for receivers in s.by_device.values_mut() {
        receivers.retain(|_, h| now_ms - h.last_heard <= FORGET_AFTER_MS);
    }
    s.by_device.retain(|_, receivers| !receivers.is_empty());
    s.entries = s.by_device.values().map(HashMap::len).sum();
    s.remotes.retain(|_, r| r.last_contact.is_some_and(|at| now_ms - at <= FORGET_AFTER_MS));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_receivers_by_smoothed_rssi_and_summarises_them() {
        let heard = HeardBy::default();
        let local: Arc<str> = Arc::from("ble:hci0");
        let remote: Arc<str> = Arc::from("ruuvi:C8:25:2D:8E:9C:2C");
        // The remote hears the tag better on average; one strong local outlier must not flip it.
        for (i, (l, r)) in [(-80, -60), (-81, -62), (-50, -61)].into_iter().enumerate() {
            heard.record("ruuvi-a", &local, Some(l), 1_000 + i as i64);
            heard.record("ruuvi-a", &remote, Some(r), 1_000 + i as i64);
        }
        heard.record("ruuvi-b", &local, None, 2_000);
        heard.contact(&remote, "kitchen-gw", "mqtt", Some(true), 2_500);
        let ranking = heard.for_device("ruuvi-a");
        assert_eq!(ranking.iter().map(|h| h.receiver.as_str()).collect::<Vec<_>>(), [&*remote, &*local]);
        assert_eq!(ranking[1].rssi, Some(-50), "the last sample is shown as is");
        assert_eq!(ranking[0].advertisements, 3);
        assert!(heard.for_device("ruuvi-unknown").is_empty());

        let receivers = heard.receivers(3_000);
        assert_eq!(receivers.len(), 2);
        let ble = &receivers[0];
        assert_eq!((ble.kind, ble.tags, ble.advertisements, ble.account.as_deref()), ("ble", 2, 4, None));
        let gw = &receivers[1];
        assert_eq!((gw.kind, gw.tags, gw.online, gw.transport), ("ruuvi_gateway", 1, Some(true), Some("mqtt")));
        assert_eq!(gw.account.as_deref(), Some("kitchen-gw"));
        assert_eq!(gw.last_heard, Some(2_500));
    }

    #[test]
    fn memory_is_capped_by_forgetting_the_tag_heard_longest_ago() {
        let heard = HeardBy::default();
        let local: Arc<str> = Arc::from("ble:hci0");
        for i in 0..(MAX_ENTRIES + 10) {
            heard.record(&format!("tag-{i}"), &local, Some(-70), i as i64);
        }
        assert_eq!(heard.with(|s| (s.by_device.len(), s.entries)), (MAX_ENTRIES, MAX_ENTRIES));
        assert!(heard.for_device("tag-0").is_empty(), "the oldest went first");
        assert_eq!(heard.for_device(&format!("tag-{}", MAX_ENTRIES + 9)).len(), 1);
    }

    #[test]
    fn forgets_what_was_silent_for_a_day() {
        let heard = HeardBy::default();
        let local: Arc<str> = Arc::from("ble:hci0");
        heard.record("ruuvi-old", &local, Some(-70), 0);
        let later = FORGET_AFTER_MS + 1;
        heard.with(|s| prune(s, later));
        assert!(heard.for_device("ruuvi-old").is_empty());
    }
}
