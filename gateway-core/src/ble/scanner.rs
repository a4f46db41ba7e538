//! The btleplug scanner: finds the adapter, keeps a scan running, turns Ruuvi manufacturer data
//! into [`Advertisement`]s for the pipeline, and recovers when the scan stops.
//!
//! What btleplug 0.13 on BlueZ actually delivers (docs/ARCHITECTURE.md, "Bluetooth"): a new
//! device's first advertisement comes only as `DeviceDiscovered` (its data must be read with
//! `properties()`); later ones as `ManufacturerDataAdvertisement`, each preceded by its own
//! `RssiUpdate`; a power cycle as `StateUpdate`; a bluetoothd restart or a dead D-Bus
//! connection as nothing at all. So the scan is restarted after power comes back, and the
//! watchdog (see `watchdog.rs`) handles the silent failures.
//!
//! Every D-Bus call has a timeout: with the bus gone, btleplug would wait 30 s per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btleplug::api::{Central, CentralEvent, CentralState, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::watchdog::{Action, Policy, Watchdog};
use super::{BleStatus, ScannerState, RUUVI_COMPANY_ID};
use crate::clock::StepDetector;
use crate::config::BleConfig;
use crate::pipeline::Advertisement;
use crate::reading::now_ms;
use crate::ruuvi::Mac;

/// Longest wait for one D-Bus round trip before the call counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Peripheral ids → addresses are cached; forgotten above this size (BlueZ churns ids of phones).
const ADDRESS_CACHE_MAX: usize = 4096;

/// Rebuilds the advertisement a RuuviTag sends (flags, then the manufacturer-specific AD structure)
/// from the Ruuvi manufacturer data BlueZ hands over, which has the parsed fields only, so that
/// consumers of the Ruuvi-compatible output that expect the gateway's byte layout work unchanged.
/// The length byte counts type and company id too; a payload too long for one legacy AD structure
/// is left for the decoder to refuse.
pub fn manufacturer_advertisement(payload: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(payload.len() + 7);
    data.extend_from_slice(&[0x02, 0x01, 0x06]);
    data.push(u8::try_from(payload.len() + 3).unwrap_or(u8::MAX));
    data.push(0xFF);
    data.extend_from_slice(&RUUVI_COMPANY_ID.to_le_bytes());
    data.extend_from_slice(payload);
    data
}

/// Set when the scanner gives up for good: the reason, and the token that stops the gateway.
#[derive(Clone)]
pub struct Fatal {
    pub reason: Arc<Mutex<Option<String>>>,
    pub stop: CancellationToken,
}

impl Fatal {
    fn raise(&self, reason: String) {
        tracing::error!("{reason}");
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.stop.cancel();
    }
}

/// How a scan session ended.
enum Ended {
    Shutdown,
    /// The watchdog asks for a fresh Manager.
    NewManager,
    GiveUp,
    /// The adapter or the bus went away under us.
    Lost(String),
}

/// Runs until `shutdown`: connect, scan, recover, repeat.
pub async fn run(
    config: BleConfig,
    ingress: mpsc::Sender<Advertisement>,
    status: Arc<BleStatus>,
    switch: super::ScanSwitch,
    fatal: Fatal,
    shutdown: CancellationToken,
) {
    let mut paused = switch.subscribe();
    let policy = Policy {
        stall_after_ms: config.watchdog.as_millis() as i64,
        scan_restarts: config.scan_restarts,
        manager_restarts: config.manager_restarts,
    };
    // The ladder spans sessions: a new Manager that brings no data back moves on to the next step.
    let mut watchdog = Watchdog::new(policy);
    let mut retry = RETRY_MIN;
    // Kept across retries: btleplug cannot close a Manager's D-Bus connection (its background
    // task holds it until the bus goes away), so a new Manager per retry would leak connections.
    let mut manager: Option<Manager> = None;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let (central, adapter_name) = match connect(&mut manager, &config.adapter).await {
            Ok(found) => found,
            Err(why) => {
                // Reconnecting after data stopped (D-Bus gone) still climbs the ladder to GiveUp.
                watchdog.bluez_failed();
                if watchdog.check(now_ms()) == Action::GiveUp {
                    let reason = format!(
                        "Bluetooth stopped delivering data and BlueZ cannot be reached ({why}); exiting so that the \
                         service manager restarts Gatehouse. Check `systemctl status bluetooth dbus`."
                    );
                    status.set_state(ScannerState::Failed, reason.clone());
                    fatal.raise(reason);
                    return;
                }
                status.set_adapter(None);
                status.set_state(
                    ScannerState::Unavailable,
                    format!("Bluetooth is unavailable: {why}; retrying in {}s", retry.as_secs()),
                );
                tracing::warn!("Bluetooth is unavailable: {why}; retrying in {}s", retry.as_secs());
                if sleep_or_shutdown(retry, &shutdown).await {
                    return;
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        status.set_adapter(Some(adapter_name.clone()));
        let mut session = Session {
            central,
            receiver: Arc::from(format!("ble:{adapter_name}")),
            adapter_name,
            ingress: ingress.clone(),
            status: status.clone(),
            addresses: HashMap::new(),
            rssi: HashMap::new(),
            powered: true,
            paused: false,
            known_at_start: Default::default(),
            clock: StepDetector::default(),
        };
        match session.run(&mut watchdog, &mut paused, &shutdown).await {
            Ended::Shutdown => return,
            Ended::NewManager => {
                manager = None;
                status.recovered(|r| r.new_managers += 1);
                tracing::warn!(adapter = %session.adapter_name, "no Ruuvi data despite scan restarts; reconnecting to BlueZ with a new manager");
                retry = RETRY_MIN;
            }
            Ended::GiveUp => {
                let reason = format!(
                    "Bluetooth scanning on {} stopped delivering data and could not be recovered (scan restarts and \
                     new D-Bus connections did not help); exiting so that the service manager restarts Gatehouse. \
                     If this repeats, run `sudo systemctl restart bluetooth` and check `journalctl -u bluetooth`.",
                    session.adapter_name
                );
                status.set_state(ScannerState::Failed, reason.clone());
                status.error(reason.clone());
                fatal.raise(reason);
                return;
            }
            Ended::Lost(why) => {
                manager = None;
                status.recovered(|r| r.reconnects += 1);
                status.error(why.clone());
                status.set_state(ScannerState::Recovering, format!("lost the adapter ({why}); reconnecting"));
                tracing::warn!(adapter = %session.adapter_name, "Bluetooth session ended: {why}; reconnecting");
                if sleep_or_shutdown(retry, &shutdown).await {
                    return;
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// True if shutdown came first.
async fn sleep_or_shutdown(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = shutdown.cancelled() => true,
    }
}

async fn call<T>(what: &str, future: impl std::future::Future<Output = btleplug::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what}: {error}")),
        Err(_) => Err(format!("{what}: no answer from BlueZ within {}s", CALL_TIMEOUT.as_secs())),
    }
}

/// The wanted adapter, through `manager` (made first if there is none: one D-Bus connection to
/// the system bus). A manager whose calls fail is dropped, so the next attempt starts afresh.
async fn connect(manager: &mut Option<Manager>, wanted: &str) -> Result<(Adapter, String), String> {
    if manager.is_none() {
        *manager =
            Some(call("connecting to BlueZ over D-Bus", Manager::new()).await.map_err(|e| {
                format!("{e} (is bluetoothd running, and may this user use it? See docs/bluetooth.md)")
            })?);
    }
    let found = find_adapter(manager.as_ref().expect("set above"), wanted).await;
    if let Err(Lookup::Failed(_)) = &found {
        *manager = None;
    }
    found.map_err(|e| match e {
        Lookup::Failed(why) | Lookup::Missing(why) => why,
    })
}

enum Lookup {
    /// BlueZ did not answer.
    Failed(String),
    /// BlueZ answered: no such adapter.
    Missing(String),
}

async fn find_adapter(manager: &Manager, wanted: &str) -> Result<(Adapter, String), Lookup> {
    let adapters = call("listing adapters", manager.adapters()).await.map_err(Lookup::Failed)?;
    let mut names = Vec::new();
    for adapter in adapters {
        // adapter_info is "hci0 (usb:v1D6Bp0246d0537)".
        let info = call("reading adapter info", adapter.adapter_info()).await.map_err(Lookup::Failed)?;
        let name = info.split_whitespace().next().unwrap_or_default().to_string();
        if wanted.is_empty() || name == wanted {
            tracing::info!(adapter = %info, "using Bluetooth adapter");
            return Ok((adapter, name));
        }
        names.push(name);
    }
    Err(Lookup::Missing(if names.is_empty() {
        "no Bluetooth adapter found".to_string()
    } else {
        format!("adapter {wanted} not found (found: {}); set ble.adapter", names.join(", "))
    }))
}

struct Session {
    central: Adapter,
    adapter_name: String,
    receiver: Arc<str>,
    ingress: mpsc::Sender<Advertisement>,
    status: Arc<BleStatus>,
    addresses: HashMap<PeripheralId, Mac>,
    /// The last RSSI per peripheral: btleplug reports it in its own event, just before the data.
    rssi: HashMap<PeripheralId, i16>,
    powered: bool,
    /// The user paused scanning: discovery is stopped and the watchdog rests.
    paused: bool,
    /// Devices BlueZ already knew when this session subscribed. btleplug announces each of them
    /// with a DeviceDiscovered whose properties are BlueZ's cached (possibly old) data: that
    /// must not pass for a new advertisement. Their next real one arrives as usual.
    known_at_start: std::collections::HashSet<PeripheralId>,
    /// Keeps the watchdog's quiet period in real time across steps of the system clock.
    clock: StepDetector,
}

impl Session {
    async fn run(
        &mut self,
        watchdog: &mut Watchdog,
        paused: &mut tokio::sync::watch::Receiver<bool>,
        shutdown: &CancellationToken,
    ) -> Ended {
        // Subscribe before scanning, so that no first advertisement is missed.
        let mut events = match call("subscribing to BlueZ events", self.central.events()).await {
            Ok(events) => events,
            Err(why) => return Ended::Lost(why),
        };
        match call("listing known devices", self.central.peripherals()).await {
            Ok(known) => self.known_at_start = known.iter().map(|p| p.id()).collect(),
            Err(why) => return Ended::Lost(why),
        }
        let mut scan_retry = RETRY_MIN;
        self.paused = *paused.borrow_and_update();
        let mut next_scan_attempt = if self.paused {
            self.show_paused();
            None
        } else if self.start_scan().await {
            None
        } else {
            Some(tokio::time::Instant::now() + scan_retry)
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = call("stopping the scan", self.central.stop_scan()).await;
                    return Ended::Shutdown;
                }
                changed = paused.changed() => {
                    if changed.is_err() {
                        continue; // the switch is gone with the gateway; shutdown follows
                    }
                    self.paused = *paused.borrow_and_update();
                    if self.paused {
                        tracing::info!(adapter = %self.adapter_name, "scanning paused");
                        let _ = call("stopping the scan", self.central.stop_scan()).await;
                        next_scan_attempt = None;
                        self.show_paused();
                    } else {
                        tracing::info!(adapter = %self.adapter_name, "scanning resumed");
                        watchdog.rest(now_ms());
                        if self.powered && !self.start_scan().await {
                            next_scan_attempt = Some(tokio::time::Instant::now() + scan_retry);
                        }
                    }
                }
                event = events.next() => match event {
                    Some(event) if self.paused => drop(event), // another client's discovery
                    Some(event) => {
                        if let Some(ended) = self.handle(event, watchdog, &mut next_scan_attempt).await {
                            return ended;
                        }
                    }
                    None => return Ended::Lost("the BlueZ event stream ended".into()),
                },
                _ = tick.tick() => {
                    if next_scan_attempt.is_some_and(|at| at <= tokio::time::Instant::now()) && self.powered {
                        if self.start_scan().await {
                            next_scan_attempt = None;
                            scan_retry = RETRY_MIN;
                        } else {
                            scan_retry = (scan_retry * 2).min(RETRY_MAX);
                            next_scan_attempt = Some(tokio::time::Instant::now() + scan_retry);
                        }
                    }
                    if let Some(step) = self.clock.check() {
                        watchdog.clock_stepped(step);
                    }
                    if !self.powered || self.paused {
                        watchdog.rest(now_ms());
                        continue;
                    }
                    match watchdog.check(now_ms()) {
                        Action::Nothing => {}
                        Action::RestartScan => {
                            let quiet = self.status.last_advert_at().map(|at| (now_ms() - at) / 1000);
                            tracing::warn!(adapter = %self.adapter_name, quiet_seconds = ?quiet, "no Ruuvi advertisement for too long; restarting the scan");
                            self.status.recovered(|r| r.scan_restarts += 1);
                            self.status.set_state(ScannerState::Recovering, "no Ruuvi data for too long; restarting the scan");
                            // Stopping fails when BlueZ already stopped it: that is the usual case here.
                            let stopped = call("stopping the scan", self.central.stop_scan()).await;
                            let timed_out = matches!(&stopped, Err(why) if why.contains("no answer"));
                            if self.start_scan_with(ScannerState::Recovering).await && !timed_out {
                                watchdog.bluez_answered();
                            } else {
                                watchdog.bluez_failed();
                                next_scan_attempt = Some(tokio::time::Instant::now() + scan_retry);
                            }
                        }
                        Action::NewManager => {
                            self.status.set_state(ScannerState::Recovering, "no Ruuvi data after scan restarts; reconnecting to BlueZ");
                            let _ = call("stopping the scan", self.central.stop_scan()).await;
                            return Ended::NewManager;
                        }
                        Action::GiveUp => return Ended::GiveUp,
                    }
                }
            }
        }
    }

    fn show_paused(&self) {
        self.status.set_state(
            ScannerState::Paused,
            format!("scanning on {} is paused; resume it from the tray menu", self.adapter_name),
        );
    }

    /// Starts discovery; true when the adapter is scanning afterwards.
    async fn start_scan(&mut self) -> bool {
        self.start_scan_with(ScannerState::Scanning).await
    }

    /// Like `start_scan`; `state` is what the status says afterwards (a recovery stays
    /// "recovering" until data arrives again).
    async fn start_scan_with(&mut self, state: ScannerState) -> bool {
        match call("starting the scan", self.central.start_scan(ScanFilter::default())).await {
            Ok(()) => {}
            // BlueZ says InProgress when this client's discovery is already running: fine.
            Err(why) if why.contains("InProgress") || why.contains("already in progress") => {}
            Err(why) => {
                tracing::warn!(adapter = %self.adapter_name, "{why}");
                self.status.error(why.clone());
                self.status.set_state(ScannerState::Recovering, format!("cannot start scanning: {why}; retrying"));
                return false;
            }
        }
        tracing::info!(adapter = %self.adapter_name, "scanning for Ruuvi tags");
        let message = match state {
            ScannerState::Scanning => format!("scanning on {}", self.adapter_name),
            _ => format!("scan restarted on {}; no Ruuvi data since then", self.adapter_name),
        };
        self.status.set_state(state, message);
        true
    }

    async fn handle(
        &mut self,
        event: CentralEvent,
        watchdog: &mut Watchdog,
        next_scan_attempt: &mut Option<tokio::time::Instant>,
    ) -> Option<Ended> {
        match event {
            CentralEvent::DeviceDiscovered(id) if self.known_at_start.remove(&id) => {
                if let Ok(peripheral) = call("reading a known device", self.central.peripheral(&id)).await {
                    self.remember(id, Mac(peripheral.address().into_inner()));
                }
            }
            CentralEvent::DeviceDiscovered(id) => {
                // A new device's first advertisement is only readable from its properties.
                let peripheral = call("reading a new device", self.central.peripheral(&id)).await.ok()?;
                let properties = call("reading device properties", peripheral.properties()).await.ok()??;
                let mac = Mac(peripheral.address().into_inner());
                self.remember(id.clone(), mac);
                if let Some(rssi) = properties.rssi {
                    self.rssi.insert(id, rssi);
                }
                match properties.manufacturer_data.get(&RUUVI_COMPANY_ID) {
                    Some(data) => self.forward(mac, data, properties.rssi, watchdog),
                    None if !properties.manufacturer_data.is_empty() => self.status.other_advert(),
                    None => {}
                }
            }
            CentralEvent::RssiUpdate { id, rssi } => {
                if self.rssi.len() >= ADDRESS_CACHE_MAX && !self.rssi.contains_key(&id) {
                    self.rssi.clear();
                }
                self.rssi.insert(id, rssi);
            }
            CentralEvent::ManufacturerDataAdvertisement { id, manufacturer_data } => {
                let Some(data) = manufacturer_data.get(&RUUVI_COMPANY_ID) else {
                    self.status.other_advert();
                    return None;
                };
                let mac = match self.addresses.get(&id) {
                    Some(mac) => *mac,
                    None => {
                        let peripheral = call("reading a device", self.central.peripheral(&id)).await.ok()?;
                        let mac = Mac(peripheral.address().into_inner());
                        self.remember(id.clone(), mac);
                        mac
                    }
                };
                let rssi = self.rssi.get(&id).copied();
                self.forward(mac, data, rssi, watchdog);
            }
            CentralEvent::StateUpdate(CentralState::PoweredOff) => {
                tracing::warn!(adapter = %self.adapter_name, "Bluetooth adapter switched off; waiting for it to come back");
                self.powered = false;
                self.status.set_state(
                    ScannerState::PoweredOff,
                    format!("adapter {} is switched off; scanning resumes when it is on again", self.adapter_name),
                );
            }
            CentralEvent::StateUpdate(CentralState::PoweredOn) if !self.powered => {
                // BlueZ drops every discovery session on power-off: scan again.
                self.powered = true;
                tracing::info!(adapter = %self.adapter_name, "Bluetooth adapter switched on again; restarting the scan");
                self.status.recovered(|r| r.power_cycles += 1);
                if !self.start_scan().await {
                    *next_scan_attempt = Some(tokio::time::Instant::now() + RETRY_MIN);
                }
            }
            _ => {}
        }
        None
    }

    fn remember(&mut self, id: PeripheralId, mac: Mac) {
        if self.addresses.len() >= ADDRESS_CACHE_MAX && !self.addresses.contains_key(&id) {
            self.addresses.clear();
        }
        self.addresses.insert(id, mac);
    }

    /// Rebuilds the manufacturer-specific AD structure BlueZ unpacked, and queues it.
    fn forward(&mut self, mac: Mac, payload: &[u8], rssi: Option<i16>, watchdog: &mut Watchdog) {
        // Before the advert restarts the quiet period in the new time: a step seen later would
        // move that start too.
        if let Some(step) = self.clock.check() {
            watchdog.clock_stepped(step);
        }
        let now = now_ms();
        watchdog.ruuvi_heard(now);
        let advertisement = Advertisement {
            address: Some(mac),
            data: manufacturer_advertisement(payload),
            rssi,
            received_at: now,
            measured_at: None,
            receiver: self.receiver.clone(),
        };
        // Never wait here: btleplug queues events without bound, so a stalled loop grows memory.
        let queued = self.ingress.try_send(advertisement).is_ok();
        self.status.ruuvi_advert(mac, now, queued);
        if self.status.state() == ScannerState::Recovering && self.powered {
            self.status.set_state(ScannerState::Scanning, format!("scanning on {}", self.adapter_name));
        }
    }
}
