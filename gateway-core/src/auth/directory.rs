//! The identity directory: every MQTT identity, cached in memory and persisted in SQLite.
//! Authenticates CONNECTs (argon2id, with a keyed in-memory cache so that reconnect storms do not
//! cost one argon2 run per connection) and manages service accounts. Changes that revoke access
//! are announced on the bus so the broker can disconnect live sessions at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{params, OptionalExtension};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{password, valid_device_id, validate_extra_rules, Acl, Identity, Role, Rule};
use crate::bus::{Bus, Event};
use crate::reading::now_ms;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    NoCredentials,
    #[error("unknown user or wrong password")]
    BadCredentials,
    #[error("identity is disabled")]
    Disabled,
    #[error("client id `{0}` is not allowed for this identity")]
    ClientIdNotAllowed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{0}")]
    Invalid(String),
    #[error("an identity named `{0}` already exists")]
    Exists(String),
    #[error("no identity named `{0}`")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for DirectoryError {
    fn from(error: rusqlite::Error) -> Self {
        DirectoryError::Store(StoreError::Sqlite(error))
    }
}

/// A successful authentication: who, and what the session may do.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub identity: Identity,
    pub acl: Acl,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewIdentity {
    pub username: String,
    pub role: Role,
    pub site: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub description: Option<String>,
}

pub struct Directory {
    identities: RwLock<HashMap<String, Identity>>,
    store: Store,
    bus: Bus,
    /// username → SHA-256(key ‖ secret) of the last secret that verified.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// argon2id needs 19 MiB per run: a reconnect storm after a restart (empty cache) must not run
    /// hundreds at once (measured: 2 GB of RSS for 100 parallel logins).
    hashing: tokio::sync::Semaphore,
    cache_key: [u8; 32],
}

/// argon2id runs at the same time at most (about one per core of a Raspberry Pi or small PC).
const MAX_PARALLEL_HASHES: usize = 2;

/// Verified against when the user does not exist, so that timing does not reveal which names do.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4SSG1WH1V9SsaFV2Ob9L9aW2f8Ftfgjq9QEfuV7xYIk";

impl Directory {
    pub async fn load(store: Store, bus: Bus) -> Result<Arc<Directory>, StoreError> {
        let identities = store
            .run(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT username, role, site, rules, enabled, description, created_at, password_hash, \
                     next_password_hash FROM identities",
                )?;
                let rows = stmt.query_map([], |row| {
                    let role: String = row.get(1)?;
                    let rules: String = row.get(3)?;
                    Ok(Identity {
                        username: row.get(0)?,
                        role: Role::parse(&role).unwrap_or(Role::Service),
                        site: row.get(2)?,
                        rules: serde_json::from_str(&rules).unwrap_or_default(),
                        enabled: row.get(4)?,
                        description: row.get(5)?,
                        created_at: row.get(6)?,
                        password_hash: row.get(7)?,
                        next_password_hash: row.get(8)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        tracing::info!(identities = identities.len(), "MQTT identities loaded");
        Ok(Arc::new(Directory {
            identities: RwLock::new(identities.into_iter().map(|i| (i.username.clone(), i)).collect()),
            store,
            bus,
            verified: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(MAX_PARALLEL_HASHES),
            cache_key: rand::random(),
        }))
    }

    pub fn get(&self, username: &str) -> Option<Identity> {
        self.identities.read().unwrap_or_else(|p| p.into_inner()).get(username).cloned()
    }

    pub fn list(&self) -> Vec<Identity> {
        let mut all: Vec<Identity> =
            self.identities.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| a.username.cmp(&b.username));
        all
    }

    fn digest(&self, secret: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.cache_key);
        hasher.update(secret.as_bytes());
        hasher.finalize().into()
    }

    /// Checks a CONNECT's credentials. Never says which part was wrong to the caller's peer.
    pub async fn authenticate(
        &self,
        username: Option<&str>,
        secret: Option<&str>,
        client_id: &str,
    ) -> Result<Authenticated, AuthError> {
        let (Some(username), Some(secret)) = (username, secret) else {
            return Err(AuthError::NoCredentials);
        };
        let identity = self.get(username);
        let digest = self.digest(secret);
        let cached = identity.is_some()
            && self
                .verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(username)
                .is_some_and(|d| constant_time_eq(d, &digest));
        let mut identity = identity;
        if !cached {
            let current =
                identity.as_ref().and_then(|i| i.password_hash.clone()).unwrap_or_else(|| DUMMY_HASH.to_string());
            let next = identity.as_ref().and_then(|i| i.next_password_hash.clone());
            let secret = secret.to_string();
            let _permit = self.hashing.acquire().await.map_err(|_| AuthError::BadCredentials)?;
            let (ok, with_next) = tokio::task::spawn_blocking(move || {
                if password::verify(&secret, &current) {
                    (true, false)
                } else {
                    let with_next = next.is_some_and(|next| password::verify(&secret, &next));
                    (with_next, with_next)
                }
            })
            .await
            .unwrap_or((false, false));
            if !ok || identity.is_none() {
                return Err(AuthError::BadCredentials);
            }
            if with_next {
                // The device uses its new secret: it replaces the old one for good.
                identity = self.promote_next_secret(username).await.or(identity);
            }
            self.verified.lock().unwrap_or_else(|p| p.into_inner()).insert(username.to_string(), digest);
        }
        let identity = identity.ok_or(AuthError::BadCredentials)?;
        admit(identity, client_id)
    }

    /// Whether `identity` (as it was when a client authenticated) still stands: same secret,
    /// still enabled, not deleted.
    pub fn is_current(&self, identity: &Identity) -> bool {
        self.get(&identity.username).is_some_and(|now| now.enabled && now.password_hash == identity.password_hash)
    }

    /// Authenticates a client whose TLS certificate (verified against the gateway's CA) names
    /// `certified`. A username given in CONNECT must be the same.
    pub fn authenticate_certificate(
        &self,
        certified: &str,
        claimed_username: Option<&str>,
        client_id: &str,
    ) -> Result<Authenticated, AuthError> {
        if claimed_username.is_some_and(|claimed| claimed != certified) {
            return Err(AuthError::BadCredentials);
        }
        let identity = self.get(certified).ok_or(AuthError::BadCredentials)?;
        admit(identity, client_id)
    }

    /// Creates an identity and returns it with its secret, which is shown once and never stored.
    pub async fn create(&self, new: NewIdentity) -> Result<(Identity, String), DirectoryError> {
        if !valid_device_id(&new.username) {
            return Err(DirectoryError::Invalid(format!(
                "username `{}`: use 1–64 lower-case letters, digits, '-' or '_'",
                new.username
            )));
        }
        if !valid_device_id(&new.site) {
            return Err(DirectoryError::Invalid(format!("site `{}` is not a valid site name", new.site)));
        }
        if !new.rules.is_empty() && !matches!(new.role, Role::Service | Role::HomeAssistant) {
            return Err(DirectoryError::Invalid("extra rules are only for service and homeassistant accounts".into()));
        }
        validate_extra_rules(&new.site, &new.rules).map_err(DirectoryError::Invalid)?;
        if self.get(&new.username).is_some() {
            return Err(DirectoryError::Exists(new.username));
        }
        let secret = password::generate();
        let to_hash = secret.clone();
        let phc =
            tokio::task::spawn_blocking(move || password::hash(&to_hash)).await.map_err(|_| StoreError::WorkerGone)?;
        let identity = Identity {
            username: new.username,
            role: new.role,
            site: new.site,
            rules: new.rules,
            enabled: true,
            description: new.description,
            created_at: now_ms(),
            password_hash: Some(phc),
            next_password_hash: None,
        };
        let row = identity.clone();
        self.store
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO identities (username, role, site, rules, enabled, description, created_at, password_hash) \
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7)",
                    params![
                        row.username,
                        row.role.as_str(),
                        row.site,
                        serde_json::to_string(&row.rules).unwrap_or_else(|_| "[]".into()),
                        row.description,
                        row.created_at,
                        row.password_hash
                    ],
                )?;
                Ok(())
            })
            .await?;
        self.identities.write().unwrap_or_else(|p| p.into_inner()).insert(identity.username.clone(), identity.clone());
        tracing::info!(username = %identity.username, role = identity.role.as_str(), site = %identity.site, "identity created");
        Ok((identity, secret))
    }

    /// Replaces the secret; live sessions using the old one are disconnected.
    pub async fn rotate(&self, username: &str) -> Result<String, DirectoryError> {
        self.get(username).ok_or_else(|| DirectoryError::NotFound(username.into()))?;
        let secret = password::generate();
        let to_hash = secret.clone();
        let phc =
            tokio::task::spawn_blocking(move || password::hash(&to_hash)).await.map_err(|_| StoreError::WorkerGone)?;
        self.update(username, "UPDATE identities SET password_hash = ?2 WHERE username = ?1", Some(phc.clone()))
            .await?;
        if let Some(identity) = self.identities.write().unwrap_or_else(|p| p.into_inner()).get_mut(username) {
            identity.password_hash = Some(phc);
        }
        self.revoke(username, "secret rotated").await;
        Ok(secret)
    }

    /// Stages a new secret without revoking the current one (for handing it to a connected device);
    /// the first login with it makes it the only one. Returns the new secret.
    pub async fn stage_secret(&self, username: &str) -> Result<String, DirectoryError> {
        self.get(username).ok_or_else(|| DirectoryError::NotFound(username.into()))?;
        let secret = password::generate();
        let to_hash = secret.clone();
        let phc =
            tokio::task::spawn_blocking(move || password::hash(&to_hash)).await.map_err(|_| StoreError::WorkerGone)?;
        self.update(username, "UPDATE identities SET next_password_hash = ?2 WHERE username = ?1", Some(phc.clone()))
            .await?;
        if let Some(identity) = self.identities.write().unwrap_or_else(|p| p.into_inner()).get_mut(username) {
            identity.next_password_hash = Some(phc);
        }
        Ok(secret)
    }

    async fn promote_next_secret(&self, username: &str) -> Option<Identity> {
        let promoted = {
            let mut identities = self.identities.write().unwrap_or_else(|p| p.into_inner());
            let identity = identities.get_mut(username)?;
            identity.password_hash = identity.next_password_hash.take();
            identity.clone()
        };
        let result = self
            .update(username, "UPDATE identities SET password_hash = next_password_hash, next_password_hash = NULL WHERE username = ?1 AND ?2 IS NULL", None)
            .await;
        if let Err(error) = result {
            tracing::error!(%error, %username, "saving a rotated secret failed");
        }
        tracing::info!(%username, "rotated secret now in use; the old one no longer works");
        Some(promoted)
    }

    pub async fn set_enabled(&self, username: &str, enabled: bool) -> Result<Identity, DirectoryError> {
        self.get(username).ok_or_else(|| DirectoryError::NotFound(username.into()))?;
        let sql = if enabled {
            "UPDATE identities SET enabled = 1 WHERE username = ?1 AND ?2 IS NULL"
        } else {
            "UPDATE identities SET enabled = 0 WHERE username = ?1 AND ?2 IS NULL"
        };
        self.update(username, sql, None).await?;
        let identity = {
            let mut identities = self.identities.write().unwrap_or_else(|p| p.into_inner());
            let identity = identities.get_mut(username).ok_or_else(|| DirectoryError::NotFound(username.into()))?;
            identity.enabled = enabled;
            identity.clone()
        };
        if !enabled {
            self.revoke(username, "identity disabled").await;
        }
        Ok(identity)
    }

    pub async fn delete(&self, username: &str) -> Result<(), DirectoryError> {
        self.get(username).ok_or_else(|| DirectoryError::NotFound(username.into()))?;
        self.update(username, "DELETE FROM identities WHERE username = ?1 AND ?2 IS NULL", None).await?;
        self.identities.write().unwrap_or_else(|p| p.into_inner()).remove(username);
        self.revoke(username, "identity deleted").await;
        Ok(())
    }

    async fn update(&self, username: &str, sql: &'static str, value: Option<String>) -> Result<(), DirectoryError> {
        let username = username.to_string();
        self.store
            .run(move |conn| {
                conn.execute(sql, params![username, value]).optional()?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn revoke(&self, username: &str, reason: &'static str) {
        self.verified.lock().unwrap_or_else(|p| p.into_inner()).remove(username);
        tracing::info!(%username, reason, "access revoked; disconnecting live sessions");
        self.bus.publish(Event::IdentityRevoked { username: username.to_string(), reason }).await;
    }
}

/// The checks after the credentials: the identity is enabled and may use this client id.
fn admit(identity: Identity, client_id: &str) -> Result<Authenticated, AuthError> {
    if !identity.enabled {
        return Err(AuthError::Disabled);
    }
    if !identity.allows_client_id(client_id) {
        return Err(AuthError::ClientIdNotAllowed(client_id.to_string()));
    }
    let acl = identity.acl(client_id);
    Ok(Authenticated { identity, acl })
}

/// Compares two digests without an early exit on the first differing byte.
pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn directory() -> (Arc<Directory>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        (Directory::load(store, Bus::new(16)).await.unwrap(), dir)
    }

    fn service(name: &str) -> NewIdentity {
        NewIdentity {
            username: name.into(),
            role: Role::Service,
            site: "home".into(),
            rules: vec![],
            description: None,
        }
    }

    #[tokio::test]
    async fn create_authenticate_rotate_disable_delete() {
        let (directory, dir) = directory().await;
        let (identity, secret) = directory.create(service("ha")).await.unwrap();
        assert_eq!(identity.role, Role::Service);
        assert!(matches!(directory.create(service("ha")).await, Err(DirectoryError::Exists(_))));

        let auth = |user: Option<&'static str>, secret: Option<String>| {
            let directory = directory.clone();
            async move { directory.authenticate(user, secret.as_deref(), "client").await.map(|a| a.identity.username) }
        };
        assert_eq!(auth(Some("ha"), Some(secret.clone())).await, Ok("ha".to_string()));
        assert_eq!(auth(Some("ha"), Some(secret.clone())).await, Ok("ha".to_string()), "cached path");
        assert_eq!(auth(Some("ha"), Some("wrong".into())).await, Err(AuthError::BadCredentials));
        assert_eq!(auth(Some("nobody"), Some(secret.clone())).await, Err(AuthError::BadCredentials));
        assert_eq!(auth(None, None).await, Err(AuthError::NoCredentials));

        let new_secret = directory.rotate("ha").await.unwrap();
        assert_eq!(auth(Some("ha"), Some(secret.clone())).await, Err(AuthError::BadCredentials), "old secret is dead");
        assert_eq!(auth(Some("ha"), Some(new_secret.clone())).await, Ok("ha".to_string()));

        directory.set_enabled("ha", false).await.unwrap();
        assert_eq!(auth(Some("ha"), Some(new_secret.clone())).await, Err(AuthError::Disabled));

        // Persisted: a fresh directory on the same database sees the same state.
        let reloaded = Directory::load(Store::open(&dir.path().join("t.db")).unwrap(), Bus::new(16)).await.unwrap();
        assert!(!reloaded.get("ha").unwrap().enabled);
        assert!(reloaded.get("ha").unwrap().password_hash.unwrap().starts_with("$argon2id$"));

        directory.delete("ha").await.unwrap();
        assert!(directory.get("ha").is_none());
        assert!(matches!(directory.delete("ha").await, Err(DirectoryError::NotFound(_))));
    }

    #[tokio::test]
    async fn device_identities_are_bound_to_their_client_id_and_rules_are_validated() {
        let (directory, _dir) = directory().await;
        let (_, secret) = directory
            .create(NewIdentity {
                username: "d1".into(),
                role: Role::Device,
                site: "home".into(),
                rules: vec![],
                description: None,
            })
            .await
            .unwrap();
        assert!(directory.authenticate(Some("d1"), Some(&secret), "d1").await.is_ok());
        assert_eq!(
            directory.authenticate(Some("d1"), Some(&secret), "d2").await.map(|_| ()),
            Err(AuthError::ClientIdNotAllowed("d2".into()))
        );
        let bad = NewIdentity { rules: vec![Rule::new("devices/#", super::super::Access::Read)], ..service("nr") };
        assert!(matches!(directory.create(bad).await, Err(DirectoryError::Invalid(_))));
        assert!(matches!(directory.create(service("Bad Name")).await, Err(DirectoryError::Invalid(_))));
    }

    #[test]
    fn dummy_hash_is_a_valid_phc_string() {
        assert!(!password::verify("anything", DUMMY_HASH));
        assert!(argon2::password_hash::phc::PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
