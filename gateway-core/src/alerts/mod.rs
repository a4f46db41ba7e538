//! Alerts: stored when a device raises one, and raised and cleared by gateway rules watching
//! every reading (Ruuvi tags and LAN telemetry). Each change is announced on the bus, so it is
//! published on `gatehouse/{site}/alerts` and streamed to the UI; people acknowledge alerts
//! through the API, and it is queued for the alert webhooks ([`outbox`]) in the transaction
//! that stores it. The rule logic is pure and lives in [`rules`].

pub mod db;
pub mod outbox;
pub mod rules;
pub mod webhooks;

pub use rules::{Condition, Rule, RuleRequest};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::{AlertRecord, Bus, Event, Subscription};
use crate::clock::StepDetector;
use crate::reading::now_ms;
use crate::store::{Store, StoreError};
use rules::{Decision, Tracker};

/// How often held conditions and silences are checked.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertStats {
    pub raised: AtomicU64,
    pub cleared: AtomicU64,
    pub acknowledged: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("{0}")]
    Invalid(String),
    #[error("a rule named `{0}` exists already")]
    Exists(String),
    #[error("no alert rule with id {0}")]
    UnknownRule(i64),
    #[error("no alert with id {0}")]
    UnknownAlert(i64),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The handle the API and the lifecycle use. Cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    store: Store,
    bus: Bus,
    site: String,
    reload: mpsc::Sender<()>,
    outbox: Arc<outbox::Outbox>,
    pub stats: Arc<AlertStats>,
}

/// Creates the handle and the channel on which [`run`] hears that the rules changed.
pub fn channel(store: Store, bus: Bus, site: String, outbox: Arc<outbox::Outbox>) -> (Alerts, mpsc::Receiver<()>) {
    let (reload, reloads) = mpsc::channel(16);
    (Alerts { store, bus, site, reload, outbox, stats: Arc::default() }, reloads)
}

/// The events [`run`] evaluates rules on. It publishes `Alert`, which it does not take.
pub fn wants(event: &Event) -> bool {
    matches!(event, Event::Reading(_) | Event::Telemetry(_))
}

impl Alerts {
    /// Runs `change` (one of [`db`]'s) and queues the alert it returns for the webhooks, in one
    /// transaction; then announces it. `None`: nothing changed, nothing is announced.
    async fn commit_change(
        &self,
        change: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Option<AlertRecord>> + Send + 'static,
    ) -> Result<Option<AlertRecord>, StoreError> {
        let outbox = self.outbox.clone();
        let alert = self
            .store
            .run(move |conn| {
                let transaction = conn.unchecked_transaction()?;
                let alert = change(&transaction)?;
                let dropped = match &alert {
                    Some(alert) => outbox.enqueue(&transaction, alert)?,
                    None => 0,
                };
                transaction.commit()?;
                outbox.count_dropped(dropped);
                Ok(alert)
            })
            .await?;
        if let Some(alert) = &alert {
            self.bus.publish(Event::Alert(Arc::new(alert.clone()))).await;
        }
        Ok(alert)
    }

    /// Stores a new alert and announces it: alerts devices send (through the lifecycle) and,
    /// with counting and logging on top, those of rules ([`Alerts::raise`]).
    pub async fn record(&self, alert: AlertRecord) -> Result<AlertRecord, StoreError> {
        let stored = self
            .commit_change(move |conn| {
                let id = db::insert(conn, &alert)?;
                Ok(Some(AlertRecord { id, ..alert }))
            })
            .await?;
        Ok(stored.expect("an inserted alert"))
    }

    /// Stores a new alert of a rule and announces it.
    pub async fn raise(&self, alert: AlertRecord) -> Result<AlertRecord, StoreError> {
        let alert = self.record(alert).await?;
        self.stats.raised.fetch_add(1, Ordering::Relaxed);
        tracing::info!(device = %alert.device_id, severity = %alert.severity, source = %alert.source, message = %alert.message, "alert raised");
        Ok(alert)
    }

    async fn clear(&self, id: i64) -> Result<(), StoreError> {
        let site = self.site.clone();
        if let Some(alert) = self.commit_change(move |conn| db::clear(conn, id, now_ms(), &site)).await? {
            self.stats.cleared.fetch_add(1, Ordering::Relaxed);
            tracing::info!(device = %alert.device_id, source = %alert.source, "alert cleared");
        }
        Ok(())
    }

    /// Acknowledges the alert; one acknowledged before is returned as it is (the first
    /// acknowledgement is kept, nothing is announced again).
    pub async fn acknowledge(&self, id: i64, by: &str) -> Result<AlertRecord, AlertError> {
        let (site, by) = (self.site.clone(), by.to_string());
        let acknowledged = self.commit_change(move |conn| db::acknowledge(conn, id, &by, now_ms(), &site)).await?;
        if let Some(alert) = acknowledged {
            self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
            return Ok(alert);
        }
        let site = self.site.clone();
        self.store.run(move |conn| Ok(db::get(conn, id, &site)?)).await?.ok_or(AlertError::UnknownAlert(id))
    }

    pub async fn list(
        &self,
        device: Option<String>,
        state: Option<String>,
        unacknowledged: bool,
        limit: i64,
    ) -> Result<Vec<AlertRecord>, AlertError> {
        let site = self.site.clone();
        Ok(self
            .store
            .run(move |conn| Ok(db::list(conn, &site, device.as_deref(), state.as_deref(), unacknowledged, limit)?))
            .await?)
    }

    /// How many alerts are active and unacknowledged.
    pub async fn open_count(&self) -> Result<i64, AlertError> {
        Ok(self.store.run(|conn| Ok(db::open_count(conn)?)).await?)
    }

    pub async fn rules(&self) -> Result<Vec<Rule>, AlertError> {
        Ok(self.store.run(|conn| Ok(db::rules(conn)?)).await?)
    }

    pub async fn create_rule(&self, request: RuleRequest) -> Result<Rule, AlertError> {
        let mut rule = request.into_rule(0, now_ms()).map_err(AlertError::Invalid)?;
        let row = rule.clone();
        rule.id =
            self.store.run(move |conn| Ok(db::insert_rule(conn, &row)?)).await.map_err(|e| unique(e, &rule.name))?;
        let _ = self.reload.send(()).await;
        Ok(rule)
    }

    pub async fn update_rule(&self, id: i64, request: RuleRequest) -> Result<Rule, AlertError> {
        let rule = request.into_rule(id, now_ms()).map_err(AlertError::Invalid)?;
        let row = rule.clone();
        let found =
            self.store.run(move |conn| Ok(db::update_rule(conn, &row)?)).await.map_err(|e| unique(e, &rule.name))?;
        if !found {
            return Err(AlertError::UnknownRule(id));
        }
        let _ = self.reload.send(()).await;
        Ok(self.store.run(move |conn| Ok(db::rule(conn, id)?)).await?.unwrap_or(rule))
    }

    /// Deletes the rule; its active alerts are cleared.
    pub async fn delete_rule(&self, id: i64) -> Result<(), AlertError> {
        if !self.store.run(move |conn| Ok(db::delete_rule(conn, id)?)).await? {
            return Err(AlertError::UnknownRule(id));
        }
        let _ = self.reload.send(()).await;
        Ok(())
    }
}

fn unique(error: StoreError, name: &str) -> AlertError {
    match &error {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            AlertError::Exists(name.to_string())
        }
        _ => AlertError::Store(error),
    }
}

/// The rule engine's memory: per (rule, device), a tracker and the id of its active alert.
struct Engine {
    alerts: Alerts,
    rules: Vec<Rule>,
    trackers: HashMap<(i64, String), Tracker>,
    active: HashMap<(i64, String), i64>,
    clock: StepDetector,
}

pub async fn run(
    alerts: Alerts,
    mut reloads: mpsc::Receiver<()>,
    mut events: Subscription,
    shutdown: CancellationToken,
) {
    let mut engine = Engine {
        alerts,
        rules: Vec::new(),
        trackers: HashMap::new(),
        active: HashMap::new(),
        clock: StepDetector::default(),
    };
    if let Err(error) = engine.load().await {
        tracing::error!(%error, "cannot load alert rules; gateway alert rules are off");
        return;
    }
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Reading(reading)) => {
                    let device = reading.device_id.clone();
                    // Only serialized when some rule watches the device.
                    let mut values: Option<Value> = None;
                    engine.reading(&device, |field| {
                        if field == "motion" {
                            // 0 stationary, 1 moved (recently), 2 moving: "above 0.5" means "it moved".
                            return reading.motion.map(|m| f64::from(m.level()));
                        }
                        let values = values.get_or_insert_with(|| serde_json::to_value(&reading.measurement).unwrap_or_default());
                        values.get(field).and_then(Value::as_f64)
                    }).await;
                }
                Some(Event::Telemetry(telemetry)) => {
                    let device = telemetry.device_id.clone();
                    engine.reading(&device, |field| telemetry.values.iter().find(|(f, _)| f == field).map(|(_, v)| *v)).await;
                }
                Some(_) => {}
                None => return,
            },
            Some(()) = reloads.recv() => {
                if let Err(error) = engine.load().await {
                    tracing::error!(%error, "reloading alert rules failed; keeping the previous ones");
                }
            }
            _ = ticker.tick() => engine.tick().await,
            _ = shutdown.cancelled() => return,
        }
    }
}

impl Engine {
    /// (Re)reads the rules, the active rule alerts and when devices were last seen. Active alerts
    /// of rules that no longer exist (or were disabled) are cleared.
    async fn load(&mut self) -> Result<(), StoreError> {
        let (rules, active, last_seen) = self
            .alerts
            .store
            .run(|conn| Ok((db::rules(conn)?, db::active_rule_alerts(conn)?, db::last_seen(conn)?)))
            .await?;
        self.rules = rules.into_iter().filter(|r| r.enabled).collect();
        let live: HashMap<i64, &Rule> = self.rules.iter().map(|r| (r.id, r)).collect();
        let mut trackers = HashMap::new();
        self.active.clear();
        for (rule_id, device, alert_id) in active {
            if live.contains_key(&rule_id) {
                self.active.insert((rule_id, device.clone()), alert_id);
            } else {
                self.alerts.clear(alert_id).await?;
            }
        }
        for rule in &self.rules {
            for (device, seen) in &last_seen {
                if !rule.watches(device) {
                    continue;
                }
                let key = (rule.id, device.clone());
                let mut tracker = self.trackers.remove(&key).unwrap_or_default();
                tracker.last_seen = tracker.last_seen.or(Some(*seen)).max(Some(*seen));
                tracker.active = self.active.contains_key(&key);
                trackers.insert(key, tracker);
            }
        }
        self.trackers = trackers;
        tracing::debug!(rules = self.rules.len(), active = self.active.len(), "alert rules loaded");
        Ok(())
    }

    /// Moves the trackers' times by a step of the system clock, so "for" and silent rules keep
    /// counting real time ([`crate::clock`]).
    fn follow_clock(&mut self) {
        if let Some(step) = self.clock.check() {
            for tracker in self.trackers.values_mut() {
                tracker.pending_since = tracker.pending_since.map(|at| at + step);
                tracker.last_seen = tracker.last_seen.map(|at| at + step);
            }
        }
    }

    async fn reading(&mut self, device: &str, mut value_of: impl FnMut(&str) -> Option<f64>) {
        self.follow_clock();
        let now = now_ms();
        let mut decisions = Vec::new();
        for rule in self.rules.iter().filter(|r| r.watches(device)) {
            let value = rule.field.as_deref().and_then(&mut value_of);
            let tracker = self.trackers.entry((rule.id, device.to_string())).or_default();
            if let Some(decision) = rules::on_reading(rule, tracker, now, value) {
                decisions.push((rule.clone(), decision));
            }
        }
        for (rule, decision) in decisions {
            self.apply(&rule, device, decision).await;
        }
    }

    async fn tick(&mut self) {
        self.follow_clock();
        let now = now_ms();
        let mut decisions = Vec::new();
        for rule in &self.rules {
            for ((rule_id, device), tracker) in self.trackers.iter_mut().filter(|((id, _), _)| *id == rule.id) {
                debug_assert_eq!(*rule_id, rule.id);
                if let Some(decision) = rules::on_tick(rule, tracker, now) {
                    decisions.push((rule.clone(), device.clone(), decision));
                }
            }
        }
        for (rule, device, decision) in decisions {
            self.apply(&rule, &device, decision).await;
        }
    }

    async fn apply(&mut self, rule: &Rule, device: &str, decision: Decision) {
        let key = (rule.id, device.to_string());
        match decision {
            Decision::Raise { value } => {
                let alert = AlertRecord {
                    id: 0,
                    device_id: device.to_string(),
                    site: self.alerts.site.clone(),
                    ts: now_ms(),
                    severity: rule.severity.clone(),
                    code: Some(format!("rule_{}", rule.id)),
                    message: describe(rule, value),
                    source: format!("rule:{}", rule.name),
                    details: Some(json!({
                        "ruleId": rule.id, "field": rule.field, "condition": rule.condition, "value": value,
                        "threshold": rule.threshold, "clearAt": rule.clear_at, "forMs": rule.for_ms,
                    })),
                    state: "active".into(),
                    rule_id: Some(rule.id),
                    cleared_at: None,
                    acknowledged_at: None,
                    acknowledged_by: None,
                };
                match self.alerts.raise(alert).await {
                    Ok(alert) => {
                        self.active.insert(key, alert.id);
                    }
                    Err(error) => {
                        tracing::error!(%error, rule = %rule.name, %device, "storing an alert failed; will retry");
                        if let Some(tracker) = self.trackers.get_mut(&key) {
                            tracker.active = false;
                        }
                    }
                }
            }
            Decision::Clear { .. } => {
                if let Some(id) = self.active.remove(&key) {
                    if let Err(error) = self.alerts.clear(id).await {
                        tracing::error!(%error, rule = %rule.name, %device, "clearing an alert failed");
                    }
                }
            }
        }
    }
}

fn describe(rule: &Rule, value: Option<f64>) -> String {
    let held = if rule.for_ms > 0 {
        format!(" for {}", humantime::format_duration(Duration::from_millis(rule.for_ms as u64)))
    } else {
        String::new()
    };
    let field = rule.field.as_deref().unwrap_or("value");
    let value = value.map(|v| format!("{v}")).unwrap_or_else(|| "?".into());
    let threshold = rule.threshold.unwrap_or_default();
    match rule.condition {
        Condition::Above => format!("{}: {field} {value} above {threshold}{held}", rule.name),
        Condition::Below => format!("{}: {field} {value} below {threshold}{held}", rule.name),
        Condition::Silent => format!("{}: no reading{held}", rule.name),
    }
}
