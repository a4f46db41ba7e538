//! The tag simulator (`gatehouse run --simulate N`): virtual RuuviTags and Ruuvi Airs that emit
//! real advertisement bytes into the same pipeline ingress the Bluetooth scanner uses, so decoding,
//! de-duplication, storage and publishing are exercised end to end.

mod encode;
mod tag;

pub use encode::{df5_advertisement, e1_advertisement, encode_df5, encode_e1, Df5Values, E1Values};
pub use tag::{SimTag, Transmission};

use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::SimulatorConfig;
use crate::pipeline::Advertisement;
use crate::reading::now_ms;

pub const RECEIVER: &str = "simulator";

/// The seed actually used: the configured one or a random one (logged so a run can be repeated).
pub fn effective_seed(config: &SimulatorConfig) -> u64 {
    config.seed.unwrap_or_else(|| rand::rng().random())
}

/// Runs `config.tags` tags until `shutdown`. Each tag advertises every `interval` (plus up to
/// 10 ms of random delay, as real tags do).
pub async fn run(
    config: SimulatorConfig,
    seed: u64,
    ingress: mpsc::Sender<Advertisement>,
    switch: crate::ble::ScanSwitch,
    shutdown: CancellationToken,
) {
    let mut tags: Vec<SimTag> = (0..config.tags).map(|i| SimTag::new(i, seed, &config)).collect();
    for tag in &tags {
        tracing::info!(mac = %tag.mac, kind = ?tag.kind, "simulated tag");
    }
    let receiver: Arc<str> = Arc::from(RECEIVER);
    let start = Instant::now();
    let interval = config.interval;
    // Spread the tags over the first interval so they do not all fire at once.
    let mut next_due: Vec<Instant> =
        (0..tags.len()).map(|i| start + interval.mul_f64(i as f64 / tags.len().max(1) as f64)).collect();
    let mut jitter = rand_chacha::ChaCha8Rng::seed_from_u64(seed.rotate_left(17));
    while !tags.is_empty() {
        let (index, &due) = next_due.iter().enumerate().min_by_key(|(_, due)| **due).expect("tags exist");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        let now = now_ms();
        // While scanning is paused the tags still "transmit" (their counters move on), unheard.
        let heard = !switch.is_paused();
        if let Some(transmission) = tags[index].transmit(now).filter(|_| heard) {
            for rssi in transmission.receptions {
                let advertisement = Advertisement {
                    address: Some(tags[index].mac),
                    data: transmission.bytes.clone(),
                    rssi: Some(rssi),
                    received_at: now,
                    measured_at: None,
                    receiver: receiver.clone(),
                };
                if ingress.send(advertisement).await.is_err() {
                    return; // pipeline stopped
                }
            }
        }
        next_due[index] = due + interval + Duration::from_millis(jitter.random_range(0..=10));
    }
}
