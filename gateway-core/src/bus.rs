//! The typed in-process event bus that joins the gateway's modules. Producers publish [`Event`]s;
//! every module that cares subscribes. Modules never call each other directly.
//!
//! Built on a tokio broadcast channel: a subscriber that falls more than `capacity` events behind
//! loses the oldest ones. [`Subscription::recv`] counts such losses in [`BusStats`] and logs them,
//! so lag is visible rather than silent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::reading::Reading;

#[derive(Debug, Clone)]
pub enum Event {
    /// A decoded, de-duplicated measurement from a device.
    Reading(Arc<Reading>),
    /// A device the gateway had never seen before.
    DeviceDiscovered(Arc<DeviceInfo>),
    /// A device went online (a reading after silence) or offline (silent for too long).
    Availability(Availability),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    pub device_id: String,
    pub kind: String,
    pub mac: Option<String>,
    pub first_seen: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    pub device_id: String,
    pub online: bool,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
}

#[derive(Debug, Default)]
pub struct BusStats {
    published: AtomicU64,
    lagged: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BusSnapshot {
    pub published: u64,
    /// Events that some subscriber lost because it fell too far behind.
    pub lagged: u64,
}

#[derive(Clone)]
pub struct Bus {
    sender: broadcast::Sender<Event>,
    stats: Arc<BusStats>,
}

impl Bus {
    pub fn new(capacity: usize) -> Bus {
        let (sender, _) = broadcast::channel(capacity);
        Bus {
            sender,
            stats: Arc::default(),
        }
    }

    pub fn publish(&self, event: Event) {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        // No subscriber is not an error: nobody needed the event.
        let _ = self.sender.send(event);
    }

    /// `name` identifies the subscriber in lag warnings.
    pub fn subscribe(&self, name: &'static str) -> Subscription {
        Subscription {
            name,
            receiver: self.sender.subscribe(),
            stats: self.stats.clone(),
        }
    }

    pub fn snapshot(&self) -> BusSnapshot {
        BusSnapshot {
            published: self.stats.published.load(Ordering::Relaxed),
            lagged: self.stats.lagged.load(Ordering::Relaxed),
        }
    }
}

pub struct Subscription {
    name: &'static str,
    receiver: broadcast::Receiver<Event>,
    stats: Arc<BusStats>,
}

impl Subscription {
    /// The next event, or `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.receiver.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(lost)) => self.count_lag(lost),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// An event that is already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            match self.receiver.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(lost)) => self.count_lag(lost),
                Err(_) => return None,
            }
        }
    }

    fn count_lag(&self, lost: u64) {
        self.stats.lagged.fetch_add(lost, Ordering::Relaxed);
        tracing::warn!(
            subscriber = self.name,
            lost,
            "event bus subscriber fell behind and lost events"
        );
    }
}
