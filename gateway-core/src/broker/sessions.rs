//! The live MQTT sessions: who is connected, from where, since when, with per-client counters;
//! and the kill switch used when an identity is revoked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bus::ClientInfo;
use crate::reading::now_ms;

#[derive(Debug, Default)]
pub struct ClientStats {
    pub publishes_in: AtomicU64,
    pub publishes_out: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Publishes and subscriptions refused by the ACL.
    pub denied: AtomicU64,
    /// Times the client was paused for exceeding its publish rate.
    pub throttled: AtomicU64,
    /// Messages the router skipped because this client fell too far behind.
    pub dropped: AtomicU64,
    /// Telemetry discarded because it did not match the device's declared fields.
    pub invalid_telemetry: AtomicU64,
}

struct Entry {
    info: Arc<ClientInfo>,
    stats: Arc<ClientStats>,
    kill: CancellationToken,
    serial: u64,
    router_connection: usize,
}

#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    by_client: HashMap<String, Entry>,
    next_serial: u64,
    /// Who left a persistent session (`clean_session = false`) under a client id: the router
    /// keeps its subscriptions and queued messages for that identity only.
    persistent_owners: HashMap<String, String>,
}

/// What `GET /api/broker/clients` shows per client.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientView {
    #[serde(flatten)]
    pub info: ClientInfo,
    pub publishes_in: u64,
    pub publishes_out: u64,
    pub bytes_in: u64,
    pub denied: u64,
    pub throttled: u64,
    pub dropped: u64,
    pub invalid_telemetry: u64,
    /// Average publishes per second since the client connected.
    pub publish_rate_in: f64,
    pub publish_rate_out: f64,
}

/// A registered session; unregisters itself on drop.
pub struct SessionHandle {
    sessions: Sessions,
    client_id: String,
    serial: u64,
    pub stats: Arc<ClientStats>,
    pub kill: CancellationToken,
}

impl SessionHandle {
    /// False once a newer connection took over this client id.
    pub fn is_current(&self) -> bool {
        let state = self.sessions.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.by_client.get(&self.client_id).is_some_and(|e| e.serial == self.serial)
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let mut state = self.sessions.inner.lock().unwrap_or_else(|p| p.into_inner());
        // A newer session with the same client id (takeover) must stay registered.
        if state.by_client.get(&self.client_id).is_some_and(|e| e.serial == self.serial) {
            state.by_client.remove(&self.client_id);
        }
    }
}

impl Sessions {
    pub fn register(&self, info: Arc<ClientInfo>, router_connection: usize) -> SessionHandle {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.next_serial += 1;
        let serial = state.next_serial;
        let stats = Arc::new(ClientStats::default());
        let kill = CancellationToken::new();
        let client_id = info.client_id.clone();
        state.by_client.insert(
            client_id.clone(),
            Entry { info, stats: stats.clone(), kill: kill.clone(), serial, router_connection },
        );
        SessionHandle { sessions: self.clone(), client_id, serial, stats, kill }
    }

    /// Whether `username` may use `client_id` now: not while another identity is connected with
    /// it or has a persistent session under it (that would hand over its queued messages or
    /// kick it off), unless the id is `own` (a device's id is its username: it takes its id back
    /// from the provisioning session it registered with). `Err` names the holder. Records the
    /// owner of a new persistent session.
    pub fn claim_client_id(
        &self,
        client_id: &str,
        username: &str,
        own: bool,
        clean_session: bool,
    ) -> Result<(), String> {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !own {
            if let Some(live) = state.by_client.get(client_id).and_then(|e| e.info.username.clone()) {
                if live != username {
                    return Err(live);
                }
            }
            if let Some(owner) = state.persistent_owners.get(client_id) {
                if owner != username {
                    return Err(owner.clone());
                }
            }
        }
        if clean_session {
            state.persistent_owners.remove(client_id);
        } else {
            state.persistent_owners.insert(client_id.to_string(), username.to_string());
        }
        Ok(())
    }

    /// Forgets the persistent sessions of an identity that no longer exists.
    pub fn forget_user(&self, username: &str) {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.persistent_owners.retain(|_, owner| owner != username);
    }

    /// Ends every session authenticated as `username`; returns how many.
    pub fn kill_user(&self, username: &str) -> usize {
        let state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut killed = 0;
        for entry in state.by_client.values().filter(|e| e.info.username.as_deref() == Some(username)) {
            entry.kill.cancel();
            killed += 1;
        }
        killed
    }

    /// Counts messages the router skipped for the client on `router_connection`.
    pub fn count_router_drop(&self, router_connection: usize, lost: u64) {
        let state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = state.by_client.values().find(|e| e.router_connection == router_connection) {
            entry.stats.dropped.fetch_add(lost, Ordering::Relaxed);
        }
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_client.len()
    }

    pub fn list(&self) -> Vec<ClientView> {
        let state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        let mut views: Vec<ClientView> = state
            .by_client
            .values()
            .map(|e| {
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let seconds = ((now - e.info.connected_at).max(1) as f64) / 1000.0;
                ClientView {
                    info: (*e.info).clone(),
                    publishes_in: get(&e.stats.publishes_in),
                    publishes_out: get(&e.stats.publishes_out),
                    bytes_in: get(&e.stats.bytes_in),
                    denied: get(&e.stats.denied),
                    throttled: get(&e.stats.throttled),
                    dropped: get(&e.stats.dropped),
                    invalid_telemetry: get(&e.stats.invalid_telemetry),
                    publish_rate_in: get(&e.stats.publishes_in) as f64 / seconds,
                    publish_rate_out: get(&e.stats.publishes_out) as f64 / seconds,
                }
            })
            .collect();
        views.sort_by(|a, b| a.info.client_id.cmp(&b.info.client_id));
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(client_id: &str, username: &str) -> Arc<ClientInfo> {
        Arc::new(ClientInfo {
            client_id: client_id.into(),
            username: Some(username.into()),
            role: Some("service".into()),
            site: Some("home".into()),
            address: "127.0.0.1:1".into(),
            transport: "tcp",
            protocol: "3.1.1",
            authentication: "password",
            connected_at: now_ms(),
        })
    }

    #[test]
    fn takeover_keeps_the_new_session_and_kill_targets_a_user() {
        let sessions = Sessions::default();
        let old = sessions.register(info("c1", "u"), 1);
        let new = sessions.register(info("c1", "u"), 2);
        let other = sessions.register(info("c2", "v"), 3);
        drop(old);
        assert_eq!(sessions.count(), 2, "the old session's exit keeps the new registration");
        assert_eq!(sessions.kill_user("u"), 1);
        assert!(new.kill.is_cancelled());
        assert!(!other.kill.is_cancelled());
        sessions.count_router_drop(3, 5);
        assert_eq!(sessions.list().iter().find(|v| v.info.client_id == "c2").unwrap().dropped, 5);
        drop(new);
        drop(other);
        assert_eq!(sessions.count(), 0);
    }

    #[test]
    fn a_client_id_stays_with_the_identity_that_holds_it() {
        let sessions = Sessions::default();
        let live = sessions.register(info("dev-1", "dev-1"), 1);
        assert!(live.is_current());
        // (client id, username, its own id, clean session, allowed)
        let steps: &[(&str, &str, bool, bool, Result<(), &str>)] = &[
            ("dev-1", "viewer", false, true, Err("dev-1")),
            ("dev-1", "dev-1", true, false, Ok(())),
            ("bridge", "nodered", false, false, Ok(())),
            ("bridge", "viewer", false, true, Err("nodered")),
            ("bridge", "nodered", false, true, Ok(())),
            ("bridge", "viewer", false, true, Ok(())),
            ("esp-9", "provision", false, false, Ok(())),
            ("esp-9", "esp-9", true, true, Ok(())),
            ("esp-9", "provision", false, false, Ok(())),
        ];
        for (client_id, username, own, clean, allowed) in steps {
            assert_eq!(
                sessions.claim_client_id(client_id, username, *own, *clean),
                allowed.map_err(String::from),
                "{client_id} as {username}"
            );
        }
        let newer = sessions.register(info("dev-1", "dev-1"), 2);
        assert!(!live.is_current() && newer.is_current(), "taken over");
        drop((live, newer));
        assert_eq!(sessions.claim_client_id("dev-1", "viewer", false, true), Err("dev-1".into()), "persistent session");
        sessions.forget_user("dev-1");
        assert_eq!(sessions.claim_client_id("dev-1", "viewer", false, true), Ok(()));
    }
}
