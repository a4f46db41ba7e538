//! The lifecycle service: registration replies, claim codes, claiming and approval, credential
//! delivery, deactivation and deletion. Holds the only plaintext secrets it must (a claim code
//! until it is used, a device password until the device has connected with it) in memory only.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::registration::{self, Capabilities};
use super::{claim_code, db};
use crate::auth::{Directory, DirectoryError, NewIdentity, Role};
use crate::bus::{Bus, Event, LifecycleChange, OutgoingMessage, Subscription};
use crate::lockout::{LockoutPolicy, Lockouts};
use crate::reading::now_ms;
use crate::store::{DeviceRecord, Store, StoreError};
use crate::topics;

/// Declared capabilities of active LAN devices, shared with the broker for telemetry checks.
#[derive(Clone, Default)]
pub struct Catalog {
    devices: Arc<RwLock<HashMap<String, Arc<Capabilities>>>>,
}

impl Catalog {
    pub fn get(&self, device_id: &str) -> Option<Arc<Capabilities>> {
        self.devices.read().unwrap_or_else(|p| p.into_inner()).get(device_id).cloned()
    }
    fn set(&self, device_id: &str, capabilities: Capabilities) {
        self.devices.write().unwrap_or_else(|p| p.into_inner()).insert(device_id.to_string(), Arc::new(capabilities));
    }
    fn remove(&self, device_id: &str) {
        self.devices.write().unwrap_or_else(|p| p.into_inner()).remove(device_id);
    }
}

#[derive(Debug, Default)]
pub struct LifecycleStats {
    pub registrations: AtomicU64,
    pub registrations_rejected: AtomicU64,
    pub claims: AtomicU64,
    pub claim_failures: AtomicU64,
    pub claim_lockouts: AtomicU64,
    pub alerts_recorded: AtomicU64,
    pub alerts_rejected: AtomicU64,
}

/// The answer to a registration, sent to the device on its reply topic (or as the HTTP body).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Reply {
    /// Waiting to be claimed with this code.
    #[serde(rename_all = "camelCase")]
    Pending { device_id: String, claim_code: String, expires_at: i64, pairing_window: bool },
    /// Claimed: the device's own credentials (sent until the device connects with them).
    #[serde(rename_all = "camelCase")]
    Credentials { device_id: String, username: String, password: String, site: String, client_id: String },
    #[serde(rename_all = "camelCase")]
    Error { code: String, field: Option<String>, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("`{0}` is not a claim code: codes are 10 characters like 7KQ4M-2XDAB")]
    Malformed(String),
    #[error("no device is waiting for this code; check it on the device ({attempts_left} attempts left before a {lockout_minutes}-minute lockout)")]
    Unknown { attempts_left: usize, lockout_minutes: u64 },
    #[error("too many wrong codes from here; try again in {} minutes", .retry_after.as_secs().div_ceil(60))]
    LockedOut { retry_after: Duration },
    #[error("the claim code of {device_id} expired at {expired_at}; generate a new one (POST /api/devices/{device_id}/claim-code) or restart the device's registration")]
    Expired { device_id: String, expired_at: String },
    #[error("device {0} is not waiting to be claimed (state {1})")]
    NotPending(String, String),
    #[error("device {0} did not register during a pairing window; claim it with its code")]
    NotFromPairing(String),
    #[error("no device with id `{0}`")]
    UnknownDevice(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Directory(#[from] DirectoryError),
}

/// Wrong claim codes: five in fifteen minutes from one source lock it out for fifteen minutes.
const CLAIM_ATTEMPTS: LockoutPolicy =
    LockoutPolicy { threshold: 5, window: Duration::from_secs(15 * 60), lockout: Duration::from_secs(15 * 60) };

pub struct Lifecycle {
    store: Store,
    directory: Arc<Directory>,
    bus: Bus,
    site: String,
    code_key: Vec<u8>,
    code_ttl: Duration,
    max_pairing: Duration,
    policy: LockoutPolicy,
    attempts: Mutex<Lockouts>,
    /// The plaintext of each pending device's current code, to resend it on re-registration.
    codes: Mutex<HashMap<String, (String, i64)>>,
    /// Passwords of claimed devices that have not yet connected with them.
    undelivered: Mutex<HashMap<String, String>>,
    pairing_until: Mutex<Option<i64>>,
    pub catalog: Catalog,
    /// Where alerts devices send are stored, queued for webhooks and announced.
    alerts: crate::alerts::Alerts,
    pub stats: Arc<LifecycleStats>,
}

fn hash_token(key: &[u8], token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(key);
    hasher.update(b"registration-token:");
    hasher.update(token.as_bytes());
    hex::encode(hasher.finalize())
}

fn format_time(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

impl Lifecycle {
    pub async fn start(
        store: Store,
        directory: Arc<Directory>,
        bus: Bus,
        site: String,
        data_dir: &Path,
        code_ttl: Duration,
        max_pairing: Duration,
        alerts: crate::alerts::Alerts,
    ) -> anyhow::Result<Arc<Lifecycle>> {
        let code_key = load_or_create_secret(&data_dir.join("secrets").join("claim-code.key"))?;
        let catalog = Catalog::default();
        for (id, json) in store.run(|conn| Ok(db::active_capabilities(conn)?)).await? {
            if let Ok(capabilities) = serde_json::from_str(&json) {
                catalog.set(&id, capabilities);
            }
        }
        Ok(Arc::new(Lifecycle {
            store,
            directory,
            bus,
            site,
            code_key,
            code_ttl,
            max_pairing,
            policy: CLAIM_ATTEMPTS,
            attempts: Mutex::new(Lockouts::default()),
            codes: Mutex::new(HashMap::new()),
            undelivered: Mutex::new(HashMap::new()),
            pairing_until: Mutex::new(None),
            catalog,
            alerts,
            stats: Arc::default(),
        }))
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        device_id: Option<&str>,
        source: Option<&str>,
        details: Option<Value>,
    ) {
        let (actor, action) = (actor.to_string(), action.to_string());
        let (device_id, source) = (device_id.map(str::to_string), source.map(str::to_string));
        let result = self
            .store
            .run(move |conn| {
                Ok(db::audit(
                    conn,
                    now_ms(),
                    &actor,
                    &action,
                    device_id.as_deref(),
                    source.as_deref(),
                    details.as_ref(),
                )?)
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "writing the audit log failed");
        }
    }

    async fn announce(&self, device_id: &str, action: &str, state: &str) {
        let change =
            LifecycleChange { device_id: device_id.into(), action: action.into(), state: state.into(), at: now_ms() };
        self.bus.publish(Event::DeviceLifecycle(Arc::new(change))).await;
    }

    async fn send_to_device(&self, site: &str, device_id: &str, reply: &Reply) {
        let payload = serde_json::to_vec(reply).unwrap_or_default();
        let message = OutgoingMessage {
            topic: topics::provisioning_reply(site, device_id),
            payload: payload.into(),
            retain: false,
        };
        self.bus.publish(Event::MqttPublish(Arc::new(message))).await;
    }

    fn pairing_open(&self, now: i64) -> bool {
        self.pairing_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|until| until > now)
    }

    /// Handles a registration from `source` (an address) and returns the reply for the device.
    /// `client_id` is set for MQTT registrations: it must be the device id.
    pub async fn register(&self, payload: &[u8], client_id: Option<&str>, source: &str) -> Reply {
        let registration = match registration::parse(payload, client_id) {
            Ok(registration) => registration,
            Err(error) => {
                self.stats.registrations_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::info!(client_id = client_id.unwrap_or(""), %source, %error, "registration refused");
                return Reply::Error {
                    code: "invalid_registration".into(),
                    field: Some(error.field),
                    message: error.message,
                };
            }
        };
        let device_id = registration.device_id.clone();
        let token_hash = hash_token(&self.code_key, &registration.registration_token);
        let id = device_id.clone();
        let existing = match self.store.run(move |conn| Ok((db::device(conn, &id)?, db::token_hash(conn, &id)?))).await
        {
            Ok(existing) => existing,
            Err(error) => return store_error_reply(error),
        };
        if let (Some(device), stored_token) = &existing {
            if device.kind != "lan" {
                return Reply::Error {
                    code: "id_taken".into(),
                    field: Some("deviceId".into()),
                    message: format!("`{device_id}` is used by another kind of device"),
                };
            }
            if device.state == "active" {
                if stored_token.as_deref() != Some(token_hash.as_str()) || device.credentials_confirmed {
                    return Reply::Error {
                        code: "already_active".into(),
                        field: None,
                        message: format!("device `{device_id}` is already claimed; deactivate it in Gatehouse before registering it again"),
                    };
                }
                // Claimed, but the device never received or used its credentials: send them again.
                return match self.credentials_for(&device_id, device.site.as_deref().unwrap_or(&self.site)).await {
                    Ok(reply) => reply,
                    Err(error) => Reply::Error { code: "internal".into(), field: None, message: error.to_string() },
                };
            }
        }

        let now = now_ms();
        let via_pairing = self.pairing_open(now);
        let site = self.site.clone();
        let (row, token) = (registration.clone(), token_hash.clone());
        if let Err(error) =
            self.store.run(move |conn| Ok(db::save_registration(conn, &row, &site, &token, via_pairing, now)?)).await
        {
            return store_error_reply(error);
        }
        let (claim_code, expires_at) = match self.current_or_new_code(&device_id, now).await {
            Ok(code) => code,
            Err(error) => return store_error_reply(error),
        };
        self.stats.registrations.fetch_add(1, Ordering::Relaxed);
        let details = json!({ "name": registration.name, "type": registration.device_type, "model": registration.model, "pairingWindow": via_pairing });
        self.audit(&format!("device:{device_id}"), "registered", Some(&device_id), Some(source), Some(details)).await;
        self.announce(&device_id, "registered", "pending_claim").await;
        tracing::info!(device = %device_id, %source, pairing = via_pairing, "device registered; waiting to be claimed");
        Reply::Pending { device_id, claim_code, expires_at, pairing_window: via_pairing }
    }

    /// The device's unexpired code if we still know it, else a new one.
    async fn current_or_new_code(&self, device_id: &str, now: i64) -> Result<(String, i64), StoreError> {
        let remembered = self.codes.lock().unwrap_or_else(|p| p.into_inner()).get(device_id).cloned();
        if let Some((code, expires_at)) = remembered {
            let id = device_id.to_string();
            let stored = self.store.run(move |conn| Ok(db::claim_code_of(conn, &id)?)).await?;
            let canonical = claim_code::normalize(&code).unwrap_or_default();
            if expires_at > now && stored.is_some_and(|(hash, _)| hash == claim_code::hash(&self.code_key, &canonical))
            {
                return Ok((code, expires_at));
            }
        }
        self.new_code(device_id, now).await
    }

    async fn new_code(&self, device_id: &str, now: i64) -> Result<(String, i64), StoreError> {
        let code = claim_code::generate();
        let canonical = claim_code::normalize(&code).expect("generated codes are canonical");
        let hash = claim_code::hash(&self.code_key, &canonical);
        let expires_at = now + self.code_ttl.as_millis() as i64;
        let id = device_id.to_string();
        self.store.run(move |conn| Ok(db::save_claim_code(conn, &id, &hash, now, expires_at)?)).await?;
        self.codes.lock().unwrap_or_else(|p| p.into_inner()).insert(device_id.to_string(), (code.clone(), expires_at));
        Ok((code, expires_at))
    }

    /// Issues a fresh code for a pending device (the old one stops working) and sends it to the
    /// device so its display can show it.
    pub async fn regenerate_code(
        &self,
        device_id: &str,
        actor: &str,
        source: &str,
    ) -> Result<(String, i64), ClaimError> {
        let device = self.device(device_id).await?;
        if device.state != "pending_claim" {
            return Err(ClaimError::NotPending(device_id.into(), device.state));
        }
        let (code, expires_at) = self.new_code(device_id, now_ms()).await?;
        self.audit(actor, "claim_code_regenerated", Some(device_id), Some(source), None).await;
        let reply =
            Reply::Pending { device_id: device_id.into(), claim_code: code.clone(), expires_at, pairing_window: false };
        self.send_to_device(device.site.as_deref().unwrap_or(&self.site), device_id, &reply).await;
        Ok((code, expires_at))
    }

    async fn device(&self, device_id: &str) -> Result<DeviceRecord, ClaimError> {
        let id = device_id.to_string();
        self.store
            .run(move |conn| Ok(db::device(conn, &id)?))
            .await?
            .ok_or_else(|| ClaimError::UnknownDevice(device_id.into()))
    }

    /// Claims the device waiting for `typed` (as typed by a person). Wrong codes count against
    /// `source`; five in fifteen minutes lock it out for fifteen minutes. Each attempt counts
    /// from the moment it arrives, before its code is looked up (and is taken back when the code
    /// exists), so guesses sent in parallel cannot test more codes than the lockout allows.
    pub async fn claim(&self, typed: &str, actor: &str, source: &str) -> Result<DeviceRecord, ClaimError> {
        let started = self
            .attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .begin(source, Instant::now(), &self.policy)
            .map_err(|retry_after| ClaimError::LockedOut { retry_after })?;
        let forgive = || self.attempts.lock().unwrap_or_else(|p| p.into_inner()).forgive(source, started);
        let reason = match claim_code::normalize(typed) {
            None => "malformed",
            Some(canonical) => {
                let hash = claim_code::hash(&self.code_key, &canonical);
                match self.store.run(move |conn| Ok(db::find_claim_code(conn, &hash)?)).await {
                    Ok(Some((device_id, expires_at))) => {
                        // A code that exists was not guessed, whatever happens next.
                        forgive();
                        if expires_at <= now_ms() {
                            self.audit(
                                actor,
                                "claim_failed",
                                Some(&device_id),
                                Some(source),
                                Some(json!({ "reason": "expired" })),
                            )
                            .await;
                            return Err(ClaimError::Expired { device_id, expired_at: format_time(expires_at) });
                        }
                        return self.activate(&device_id, actor, source, "claimed").await;
                    }
                    Ok(None) => "unknown code",
                    Err(e) => {
                        forgive();
                        return Err(e.into());
                    }
                }
            }
        };
        self.stats.claim_failures.fetch_add(1, Ordering::Relaxed);
        let error = {
            let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if let Some(retry_after) = attempts.fail(source, now, &self.policy) {
                self.stats.claim_lockouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%source, "too many wrong claim codes; source locked out");
                ClaimError::LockedOut { retry_after }
            } else if let Some(retry_after) = attempts.locked(source, now) {
                // Locked out by a parallel attempt meanwhile.
                ClaimError::LockedOut { retry_after }
            } else if reason == "malformed" {
                ClaimError::Malformed(typed.chars().take(32).collect())
            } else {
                ClaimError::Unknown {
                    attempts_left: self.policy.threshold.saturating_sub(attempts.recent(source)),
                    lockout_minutes: self.policy.lockout.as_secs() / 60,
                }
            }
        };
        self.audit(actor, "claim_failed", None, Some(source), Some(json!({ "reason": reason }))).await;
        Err(error)
    }

    /// Activates a device that registered during a pairing window, without a code.
    pub async fn approve(&self, device_id: &str, actor: &str, source: &str) -> Result<DeviceRecord, ClaimError> {
        let device = self.device(device_id).await?;
        if !device.via_pairing {
            return Err(ClaimError::NotFromPairing(device_id.into()));
        }
        self.activate(device_id, actor, source, "approved").await
    }

    async fn activate(
        &self,
        device_id: &str,
        actor: &str,
        source: &str,
        action: &str,
    ) -> Result<DeviceRecord, ClaimError> {
        let device = self.device(device_id).await?;
        if device.state != "pending_claim" {
            return Err(ClaimError::NotPending(device_id.into(), device.state));
        }
        let site = device.site.clone().unwrap_or_else(|| self.site.clone());
        // A device re-activated after a deactivation gets a new identity.
        if self.directory.get(device_id).is_some() {
            self.directory.delete(device_id).await?;
        }
        let (_, password) = self
            .directory
            .create(NewIdentity {
                username: device_id.into(),
                role: Role::Device,
                site: site.clone(),
                rules: vec![],
                description: device.name.clone(),
            })
            .await?;
        let (id, who, from) = (device_id.to_string(), actor.to_string(), source.to_string());
        self.store.run(move |conn| Ok(db::activate(conn, &id, &who, &from, now_ms())?)).await?;
        if let Some(capabilities) = device.capabilities.as_ref().and_then(|c| serde_json::from_value(c.clone()).ok()) {
            self.catalog.set(device_id, capabilities);
        }
        self.codes.lock().unwrap_or_else(|p| p.into_inner()).remove(device_id);
        self.undelivered.lock().unwrap_or_else(|p| p.into_inner()).insert(device_id.into(), password.clone());
        self.stats.claims.fetch_add(1, Ordering::Relaxed);
        self.audit(actor, action, Some(device_id), Some(source), None).await;
        self.announce(device_id, action, "active").await;
        tracing::info!(device = %device_id, %actor, %source, "device {action}; sending its credentials");
        let reply = Reply::Credentials {
            device_id: device_id.into(),
            username: device_id.into(),
            password,
            site,
            client_id: device_id.into(),
        };
        self.send_to_device(
            match &reply {
                Reply::Credentials { site, .. } => site,
                _ => &self.site,
            },
            device_id,
            &reply,
        )
        .await;
        self.device(device_id).await
    }

    /// The credentials reply for a claimed device that has not connected yet. After a gateway
    /// restart the password is gone from memory: a new one is issued.
    async fn credentials_for(&self, device_id: &str, site: &str) -> Result<Reply, DirectoryError> {
        let remembered = self.undelivered.lock().unwrap_or_else(|p| p.into_inner()).get(device_id).cloned();
        let password = match remembered {
            Some(password) => password,
            None => {
                let password = self.directory.rotate(device_id).await?;
                self.undelivered.lock().unwrap_or_else(|p| p.into_inner()).insert(device_id.into(), password.clone());
                password
            }
        };
        Ok(Reply::Credentials {
            device_id: device_id.into(),
            username: device_id.into(),
            password,
            site: site.into(),
            client_id: device_id.into(),
        })
    }

    /// The device connected with its own identity: forget its password for good.
    pub async fn credentials_used(&self, device_id: &str, source: &str) {
        self.undelivered.lock().unwrap_or_else(|p| p.into_inner()).remove(device_id);
        let id = device_id.to_string();
        if let Ok(true) = self.store.run(move |conn| Ok(db::confirm_credentials(conn, &id)?)).await {
            self.audit(
                &format!("device:{device_id}"),
                "connected_with_own_credentials",
                Some(device_id),
                Some(source),
                None,
            )
            .await;
        }
    }

    /// Gives an active device a new password over its own authenticated channel
    /// (`devices/{site}/{id}/credentials`). The old password keeps working until the device logs
    /// in with the new one, so a device that misses the message is not locked out.
    pub async fn rotate_credentials(&self, device_id: &str, actor: &str, source: &str) -> Result<(), ClaimError> {
        let device = self.device(device_id).await?;
        if device.kind != "lan" || device.state != "active" {
            return Err(ClaimError::NotPending(
                device_id.into(),
                format!("{} (only active LAN devices have credentials)", device.state),
            ));
        }
        let password = self.directory.stage_secret(device_id).await?;
        let site = device.site.clone().unwrap_or_else(|| self.site.clone());
        let reply = Reply::Credentials {
            device_id: device_id.into(),
            username: device_id.into(),
            password,
            site: site.clone(),
            client_id: device_id.into(),
        };
        let payload = serde_json::to_vec(&reply).unwrap_or_default();
        let message = OutgoingMessage {
            topic: topics::device_topic(&site, device_id, "credentials"),
            payload: payload.into(),
            retain: false,
        };
        self.bus.publish(Event::MqttPublish(Arc::new(message))).await;
        self.audit(actor, "credentials_rotated", Some(device_id), Some(source), None).await;
        Ok(())
    }

    /// Revokes the device's identity (its session ends at once) and stops task delivery. History stays.
    pub async fn deactivate(&self, device_id: &str, actor: &str, source: &str) -> Result<DeviceRecord, ClaimError> {
        let device = self.device(device_id).await?;
        if device.kind != "lan" {
            return Err(ClaimError::NotPending(
                device_id.into(),
                format!("{} (only LAN devices are claimed)", device.kind),
            ));
        }
        if self.directory.get(device_id).is_some() {
            self.directory.delete(device_id).await?;
        }
        let id = device_id.to_string();
        self.store.run(move |conn| Ok(db::set_state(conn, &id, "deactivated")?)).await?;
        self.catalog.remove(device_id);
        self.undelivered.lock().unwrap_or_else(|p| p.into_inner()).remove(device_id);
        self.audit(actor, "deactivated", Some(device_id), Some(source), None).await;
        self.announce(device_id, "deactivated", "deactivated").await;
        self.device(device_id).await
    }

    /// Removes the device (and with `purge`, its history).
    pub async fn delete(&self, device_id: &str, purge: bool, actor: &str, source: &str) -> Result<(), ClaimError> {
        self.device(device_id).await?;
        if self.directory.get(device_id).is_some() {
            self.directory.delete(device_id).await?;
        }
        let id = device_id.to_string();
        self.store.run(move |conn| Ok(db::delete(conn, &id, purge)?)).await?;
        self.catalog.remove(device_id);
        self.codes.lock().unwrap_or_else(|p| p.into_inner()).remove(device_id);
        self.undelivered.lock().unwrap_or_else(|p| p.into_inner()).remove(device_id);
        self.audit(actor, "deleted", Some(device_id), Some(source), Some(json!({ "purgedHistory": purge }))).await;
        self.announce(device_id, "deleted", "deleted").await;
        Ok(())
    }

    pub async fn update_capabilities(
        &self,
        device_id: &str,
        capabilities: Capabilities,
        actor: &str,
        source: &str,
    ) -> Result<DeviceRecord, ClaimError> {
        let device = self.device(device_id).await?;
        let json = serde_json::to_string(&capabilities).unwrap_or_default();
        let id = device_id.to_string();
        self.store.run(move |conn| Ok(db::save_capabilities(conn, &id, &json)?)).await?;
        if device.state == "active" {
            self.catalog.set(device_id, capabilities);
        }
        self.audit(actor, "capabilities_updated", Some(device_id), Some(source), None).await;
        self.announce(device_id, "capabilities_updated", &device.state).await;
        self.device(device_id).await
    }

    /// Opens the pairing window for `minutes` (capped); returns when it closes (ms).
    pub async fn open_pairing(&self, duration: Duration, actor: &str, source: &str) -> i64 {
        let duration = duration.min(self.max_pairing);
        let until = now_ms() + duration.as_millis() as i64;
        *self.pairing_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
        self.audit(actor, "pairing_opened", None, Some(source), Some(json!({ "seconds": duration.as_secs() }))).await;
        until
    }

    pub async fn close_pairing(&self, actor: &str, source: &str) {
        *self.pairing_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.audit(actor, "pairing_closed", None, Some(source), None).await;
    }

    /// When the pairing window closes (ms), if it is open.
    pub fn pairing_status(&self) -> Option<i64> {
        let now = now_ms();
        self.pairing_until.lock().unwrap_or_else(|p| p.into_inner()).filter(|&until| until > now)
    }

    pub fn max_pairing(&self) -> Duration {
        self.max_pairing
    }

    /// Stores an alert a device raised and announces it (published on `gatehouse/{site}/alerts`).
    /// Malformed alerts are logged and counted.
    pub async fn record_device_alert(&self, device_id: &str, site: &str, payload: &[u8]) {
        let alert = match registration::parse_alert(payload) {
            Ok(alert) => alert,
            Err(error) => {
                self.stats.alerts_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::info!(device = %device_id, %error, "alert discarded");
                return;
            }
        };
        let record = crate::bus::AlertRecord {
            id: 0,
            device_id: device_id.into(),
            site: site.into(),
            ts: alert.ts.unwrap_or_else(now_ms),
            severity: alert.severity,
            code: alert.code,
            message: alert.message,
            source: "device".into(),
            details: alert.details,
            state: "active".into(),
            rule_id: None,
            cleared_at: None,
            acknowledged_at: None,
            acknowledged_by: None,
        };
        let record = match self.alerts.record(record).await {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(%error, device = %device_id, "storing an alert failed");
                return;
            }
        };
        self.stats.alerts_recorded.fetch_add(1, Ordering::Relaxed);
        tracing::info!(device = %device_id, severity = %record.severity, message = %record.message, "device alert");
    }
}

fn store_error_reply(error: StoreError) -> Reply {
    tracing::error!(%error, "registration could not be stored");
    Reply::Error {
        code: "unavailable".into(),
        field: None,
        message: "the gateway could not store the registration; try again later".into(),
    }
}

/// Reads a 32-byte secret from `path`, creating it (mode 0600) on first use.
fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Ok(bytes) = std::fs::read(path) {
        if bytes.len() == 32 {
            return Ok(bytes);
        }
    }
    let key: [u8; 32] = rand::random();
    write_secret_file(path, &key)?;
    Ok(key.to_vec())
}

fn write_secret_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        crate::private_file::ensure_dir(dir)?;
    }
    crate::private_file::write(path, contents)?;
    Ok(())
}

/// The shared provisioning identity (`provision`), created on first start. Its password is kept
/// in `<data dir>/secrets/provisioning.secret` (mode 0600) so the UI can show it to the person
/// flashing devices; it only opens each client's own provisioning topics. Returns the password.
pub async fn ensure_provisioning_identity(
    directory: &Directory,
    data_dir: &Path,
    site: &str,
    rotate: bool,
) -> anyhow::Result<String> {
    let path = data_dir.join("secrets").join("provisioning.secret");
    let stored = std::fs::read_to_string(&path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let password = match (directory.get(PROVISIONING_USERNAME), stored) {
        (Some(_), Some(password)) if !rotate => return Ok(password),
        (Some(_), _) => directory.rotate(PROVISIONING_USERNAME).await?,
        (None, _) => {
            let new = NewIdentity {
                username: PROVISIONING_USERNAME.into(),
                role: Role::Provisioning,
                site: site.into(),
                rules: vec![],
                description: Some("shared by factory-fresh devices to register".into()),
            };
            directory.create(new).await?.1
        }
    };
    write_secret_file(&path, password.as_bytes())?;
    Ok(password)
}

pub const PROVISIONING_USERNAME: &str = "provision";

/// The username of the shared provisioning identity.
pub fn service_username() -> &'static str {
    PROVISIONING_USERNAME
}

/// The events [`run`] handles (its reliable subscription's filter). The lifecycle publishes
/// `MqttPublish`, `DeviceLifecycle` and `Alert`, none of which it accepts.
pub fn wants(event: &Event) -> bool {
    match event {
        Event::DeviceMessage(message) => match message.client.role.as_deref() {
            Some("provisioning") => true,
            Some("device") => message.topic.ends_with("/alert"),
            _ => false,
        },
        Event::ClientConnected(client) => client.role.as_deref() == Some("device"),
        _ => false,
    }
}

/// Handles the devices' MQTT side: registrations on the provisioning topics, alerts, and the
/// first connection of a claimed device with its own credentials.
pub async fn run(lifecycle: Arc<Lifecycle>, mut events: Subscription, shutdown: CancellationToken) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.cancelled() => return,
        };
        match event {
            Some(Event::DeviceMessage(message)) if message.client.role.as_deref() == Some("provisioning") => {
                let client = &message.client;
                let site = client.site.as_deref().unwrap_or(lifecycle.site());
                if message.topic == topics::provisioning_request(site, &client.client_id) {
                    let reply = lifecycle.register(&message.payload, Some(&client.client_id), &client.address).await;
                    lifecycle.send_to_device(site, &client.client_id, &reply).await;
                }
            }
            Some(Event::DeviceMessage(message)) if message.client.role.as_deref() == Some("device") => {
                let client = &message.client;
                let site = client.site.as_deref().unwrap_or(lifecycle.site());
                if message.topic == topics::device_topic(site, &client.client_id, "alert") {
                    lifecycle.record_device_alert(&client.client_id, site, &message.payload).await;
                }
            }
            Some(Event::ClientConnected(client)) if client.role.as_deref() == Some("device") => {
                lifecycle.credentials_used(&client.client_id, &client.address).await;
            }
            Some(_) => {}
            None => return,
        }
    }
}
