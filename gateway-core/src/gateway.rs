//! Starts and stops the whole gateway: store, bus, broker, pipeline, registry, simulator and HTTP
//! API, wired together by the event bus. The headless daemon and the desktop app both use this.
//!
//! Shutdown is done once, in order: stop intake and listeners, let the pipeline drain, then let
//! the store writer commit everything it collected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts;
use crate::api::{self, ApiState};
use crate::auth::Directory;
use crate::ble;
use crate::broker::{self, ListenerAddrs};
use crate::bus::Bus;
use crate::config::Config;
use crate::device_config;
use crate::ha_import;
use crate::health::{Health, SimulatorInfo};
use crate::homeassistant;
use crate::lifecycle::{self, Lifecycle};
use crate::pipeline::{self, Advertisement, PipelineStats, Processor};
use crate::reading::now_ms;
use crate::receivers;
use crate::registry::{self, Registry};
use crate::simulator;
use crate::store::{self, Store, StoreStats, WriterHandle};
use crate::tags::TagSettings;
use crate::tasks;
use crate::upstream;

const BUS_CAPACITY: usize = 16 * 1024;
const INGRESS_CAPACITY: usize = 8 * 1024;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Written to the data directory while the gateway runs, so scripts, tests, the CLI and the
/// desktop app can find a running gateway's addresses.
pub const RUNTIME_FILE: &str = "gatehouse.runtime.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeInfo {
    pub pid: u32,
    /// Plain MQTT listener.
    pub mqtt: SocketAddr,
    /// Every MQTT listener (plain, TLS, WebSocket, secure WebSocket).
    pub mqtt_listeners: ListenerAddrs,
    pub http: SocketAddr,
    /// The LAN listener for remote receivers' HTTP posts, when on.
    pub ingest: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub started_at: i64,
}

impl RuntimeInfo {
    pub fn read(data_dir: &Path) -> Option<RuntimeInfo> {
        let text = std::fs::read_to_string(data_dir.join(RUNTIME_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

pub struct Gateway {
    pub runtime: RuntimeInfo,
    pub health: Health,
    pub store: Store,
    pub bus: Bus,
    /// Where advertisement sources (simulator, Bluetooth scanner, remote receivers) send.
    pub ingress: mpsc::Sender<Advertisement>,
    /// Who may use the HTTP API; the desktop app asks it for launch tickets.
    pub web_auth: Arc<api::WebAuth>,
    /// Pauses and resumes Bluetooth scanning (and the simulated tags).
    pub scan_switch: ble::ScanSwitch,
    /// Raised, cleared and acknowledged alerts.
    pub alerts: alerts::Alerts,
    shutdown: CancellationToken,
    store_shutdown: CancellationToken,
    tasks: TaskTracker,
    writer: WriterHandle,
    /// Why a part of the gateway stopped it (the process should then exit with an error).
    fatal: Arc<std::sync::Mutex<Option<String>>>,
}

/// Serves `app` on `listener` until `shutdown` (handlers may ask for the peer's address).
fn spawn_http_server(
    tasks: &TaskTracker,
    listener: TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
    what: &'static str,
) {
    tasks.spawn(async move {
        let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "{what} server failed");
        }
    });
}

/// Where the generated Ruuvi-output gateway id is kept, so it survives restarts.
const RUUVI_GATEWAY_ID_FILE: &str = "ruuvi-gateway-id";

/// The configured id, or the one generated at first start (a random, locally administered MAC).
fn ruuvi_gateway_id(configured: &str, data_dir: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        let mac: crate::ruuvi::Mac =
            configured.parse().map_err(|_| anyhow::anyhow!("ruuvi_output.gateway_id `{configured}` is not a MAC"))?;
        return Ok(mac.to_string());
    }
    let path = data_dir.join(RUUVI_GATEWAY_ID_FILE);
    if let Some(id) = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<crate::ruuvi::Mac>().ok()) {
        return Ok(id.to_string());
    }
    let mut bytes: [u8; 6] = rand::random();
    bytes[0] = (bytes[0] | 0x02) & 0xFE; // locally administered, unicast
    let id = crate::ruuvi::Mac(bytes).to_string();
    std::fs::write(&path, format!("{id}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

impl Gateway {
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        crate::memory::return_large_blocks();
        let data_dir = config.resolved_data_dir();
        std::fs::create_dir_all(&data_dir).with_context(|| {
            format!("cannot create the data directory {}; pass --data-dir with a writable path", data_dir.display())
        })?;
        match crate::private_file::tighten_data_dir(&data_dir) {
            Ok(changed) => {
                for (path, mode) in changed {
                    tracing::warn!(%path, was = %format!("{mode:o}"), "a secret file or directory was readable by others; made private again");
                }
            }
            Err(error) => tracing::error!(%error, "cannot check the permissions of the data directory's secrets"),
        }
        let database = data_dir.join(store::DATABASE_FILE);
        match store::backup::apply_pending(&data_dir, &database, now_ms() / 1000) {
            Ok(Some(kept)) => {
                tracing::warn!(previous = %kept.display(), "restored the database from the staged backup; the previous one is kept")
            }
            Ok(None) => {}
            Err(error) => tracing::error!(
                "the staged restore was refused and set aside ({error}); starting with the current database"
            ),
        }
        let store = Store::open(&database)?;
        let known = store.devices().await?.into_iter().map(|d| (d.id, d.last_seen));
        let registry = Registry::with_known(known);

        let bus = Bus::new(BUS_CAPACITY);
        let shutdown = CancellationToken::new();
        let store_shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();

        let store_stats = Arc::new(StoreStats::default());
        let writer = store::spawn_writer(
            database.clone(),
            config.store.clone(),
            &bus,
            store_stats.clone(),
            store_shutdown.clone(),
        )?;

        // Subscribe before any task starts publishing, so that no early event is missed.
        let publisher_events = bus.subscribe_reliable("mqtt-publisher", 4096, broker::gateway_link_wants);
        let lifecycle_events = bus.subscribe_reliable("lifecycle", 1024, lifecycle::wants);
        let task_events = bus.subscribe_reliable("tasks", 1024, tasks::wants);
        let alert_events = bus.subscribe_reliable("alert-rules", 4096, alerts::wants);
        let webhook_events = (!config.alerts.webhooks.is_empty())
            .then(|| bus.subscribe_reliable("alert-webhooks", 4096, alerts::webhooks::wants));
        let config_events = bus.subscribe_reliable("device-config", 256, device_config::wants);
        let registry_events = bus.subscribe("registry");
        let receiver_events = bus.subscribe_reliable("receivers", 1024, receivers::wants);
        let homeassistant_events =
            config.homeassistant.enabled.then(|| bus.subscribe_reliable("homeassistant", 1024, homeassistant::wants));
        let upstream_events =
            (!config.upstream.is_empty()).then(|| bus.subscribe_reliable("upstream", 1024, upstream::wants));

        let directory = Directory::load(store.clone(), bus.clone()).await?;
        let webhooks = alerts::webhooks::prepare(&config.alerts.webhooks).map_err(anyhow::Error::msg)?;
        let webhook_stats = Arc::new(alerts::webhooks::WebhookStats::default());
        let outbox = Arc::new(alerts::outbox::Outbox::new(&config.alerts.webhooks, webhook_stats.clone()));
        let forgotten = {
            let outbox = outbox.clone();
            store.run(move |conn| Ok(outbox.forget_removed_hooks(conn)?)).await?
        };
        if forgotten > 0 {
            tracing::warn!(forgotten, "alert changes queued for webhooks no longer configured were dropped");
        }
        let (alert_service, alert_reloads) = alerts::channel(store.clone(), bus.clone(), config.site.clone(), outbox);
        let lifecycle = Lifecycle::start(
            store.clone(),
            directory.clone(),
            bus.clone(),
            config.site.clone(),
            &data_dir,
            config.devices.claim_code_ttl,
            config.devices.pairing_max,
            alert_service.clone(),
        )
        .await?;
        let own_names = crate::origin::OwnNames::new(
            &config.mqtt.tls_names.iter().chain(&config.http.host_names).cloned().collect::<Vec<_>>(),
        );
        let mqtt = broker::start(
            &config.mqtt,
            &data_dir,
            bus.clone(),
            directory.clone(),
            lifecycle.catalog.clone(),
            own_names.clone(),
            &tasks,
            shutdown.clone(),
        )
        .await?;
        lifecycle::ensure_provisioning_identity(&directory, &data_dir, &config.site, false).await?;
        tasks.spawn(lifecycle::run(lifecycle.clone(), lifecycle_events, shutdown.clone()));
        let (task_service, task_commands) = tasks::channel(store.clone(), tasks::TaskDefaults::default());
        tasks.spawn(tasks::run(
            store.clone(),
            bus.clone(),
            task_service.stats.clone(),
            task_commands,
            task_events,
            shutdown.clone(),
        ));
        let homeassistant_stats = Arc::new(homeassistant::HomeAssistantStats::default());
        if let Some(events) = homeassistant_events {
            let settings = homeassistant::Settings {
                prefix: config.homeassistant.prefix.clone(),
                site: config.site.clone(),
                expire_after: Some(config.homeassistant.expire_after).filter(|d| !d.is_zero()),
            };
            tasks.spawn(homeassistant::run(
                mqtt.links.clone(),
                store.clone(),
                task_service.clone(),
                settings,
                homeassistant_stats.clone(),
                events,
                shutdown.clone(),
            ));
        }
        let gateway_id = config.resolved_gateway_id();
        let upstreams = upstream::start(
            &config.upstream,
            &gateway_id,
            &config.site,
            &data_dir,
            mqtt.links.clone(),
            task_service.clone(),
            upstream_events,
            &tasks,
            shutdown.clone(),
        )?;
        let configs = device_config::Configs::new(store.clone(), bus.clone());
        tasks.spawn(device_config::run(configs.clone(), config_events, shutdown.clone()));
        tasks.spawn(alerts::run(alert_service.clone(), alert_reloads, alert_events, shutdown.clone()));
        if let Some(events) = webhook_events {
            tasks.spawn(alerts::webhooks::run(
                webhooks,
                config.site.clone(),
                store.clone(),
                webhook_stats.clone(),
                events,
                shutdown.clone(),
            ));
        }
        tasks.spawn(registry::run(
            registry.clone(),
            bus.clone(),
            registry_events,
            config.devices.offline_after,
            shutdown.clone(),
        ));

        let pipeline_stats = Arc::new(PipelineStats::default());
        let tag_settings = store.run(|conn| Ok(TagSettings::load(conn)?)).await?;
        let import_stats = Arc::new(ha_import::ImportStats::default());
        tasks.spawn(ha_import::run(
            mqtt.links.clone(),
            store.clone(),
            bus.clone(),
            tag_settings.clone(),
            import_stats.clone(),
            shutdown.clone(),
        ));
        let heard = Arc::new(receivers::HeardBy::default());
        let processor = Processor::new(
            config.pipeline.dedup_window.as_millis() as i64,
            pipeline_stats.clone(),
            tag_settings.clone(),
            heard.clone(),
        )
        .with_tag_lists(
            config.pipeline.allow_tags.iter().filter_map(|m| m.parse().ok()),
            config.pipeline.deny_tags.iter().filter_map(|m| m.parse().ok()),
        );
        let (ingress, ingress_rx) = mpsc::channel(INGRESS_CAPACITY);
        tasks.spawn(pipeline::run(ingress_rx, bus.clone(), processor, shutdown.clone()));
        let ingest_stats = Arc::new(receivers::IngestStats::default());
        tasks.spawn(receivers::run(
            receiver_events,
            ingress.clone(),
            heard.clone(),
            ingest_stats.clone(),
            shutdown.clone(),
        ));
        let ingest_addr = match config.receivers.http_listen {
            Some(listen) => {
                let listener = TcpListener::bind(listen).await.with_context(|| {
                    format!(
                        "cannot listen for remote receivers on {listen}; is it in use? Pick another address with \
                         --ingest, or --ingest off"
                    )
                })?;
                let addr = listener.local_addr()?;
                let app = receivers::ingest_router(receivers::IngestState {
                    directory: directory.clone(),
                    bus: bus.clone(),
                    catalog: lifecycle.catalog.clone(),
                    site: config.site.clone(),
                    ingress: ingress.clone(),
                    heard: heard.clone(),
                    stats: ingest_stats.clone(),
                });
                spawn_http_server(&tasks, listener, app, shutdown.clone(), "receiver ingest");
                Some(addr)
            }
            None => None,
        };

        let scan_switch = ble::ScanSwitch::default();
        let simulator = if config.simulator.tags > 0 {
            let seed = simulator::effective_seed(&config.simulator);
            tracing::info!(
                tags = config.simulator.tags,
                seed,
                "starting simulated tags (repeat this run with --seed {seed})"
            );
            tasks.spawn(simulator::run(
                config.simulator.clone(),
                seed,
                ingress.clone(),
                scan_switch.clone(),
                shutdown.clone(),
            ));
            Some(SimulatorInfo { tags: config.simulator.tags, seed })
        } else {
            None
        };
        let bluetooth = ble::BleStatus::new(config.ble.enabled);
        let fatal = ble::Fatal { reason: Arc::default(), stop: shutdown.clone() };
        if config.ble.enabled {
            tasks.spawn(ble::run(
                config.ble.clone(),
                ingress.clone(),
                bluetooth.clone(),
                scan_switch.clone(),
                fatal.clone(),
                shutdown.clone(),
            ));
        }

        let clock_stats = Arc::new(crate::clock::ClockStats::default());
        tasks.spawn(crate::clock::watch(clock_stats.clone(), shutdown.clone()));
        let health = Health {
            started: Instant::now(),
            clock: clock_stats,
            site: config.site.clone(),
            mqtt_addr: mqtt.addrs.tcp,
            database: database.display().to_string(),
            pipeline: pipeline_stats,
            store: store_stats,
            broker: mqtt.stats.clone(),
            bus: bus.clone(),
            registry: registry.clone(),
            bluetooth,
            simulator,
            lifecycle: lifecycle.stats.clone(),
            homeassistant_import: import_stats,
            homeassistant: homeassistant_stats,
            receivers: ingest_stats,
            tasks: task_service.stats.clone(),
            alerts: alert_service.stats.clone(),
            alert_webhooks: webhook_stats,
            device_config: configs.stats.clone(),
            upstreams: upstreams.clone(),
        };

        let ruuvi_output = if config.ruuvi_output.enabled {
            let gateway_id = ruuvi_gateway_id(&config.ruuvi_output.gateway_id, &data_dir)?;
            tracing::info!(topic = %format!("ruuvi/{gateway_id}/<tag MAC>"), mode = ?config.ruuvi_output.mode, "publishing readings in the Ruuvi Gateway format");
            Some(broker::RuuviOutput { mode: config.ruuvi_output.mode, gateway_id })
        } else {
            None
        };
        tasks.spawn(broker::run_gateway_link(
            mqtt.links.clone(),
            config.site.clone(),
            publisher_events,
            health.clone(),
            config.mqtt.health_interval,
            ruuvi_output,
            shutdown.clone(),
        ));

        let http_listener = TcpListener::bind(config.http.listen).await.with_context(|| {
            format!(
                "cannot listen for HTTP on {}; is it already in use? Pick another address with --http",
                config.http.listen
            )
        })?;
        let http_addr = http_listener.local_addr()?;
        let ui_dir = api::locate_ui(config.http.ui_dir.as_deref());
        let login_required = config.http.require_login.unwrap_or(!http_addr.ip().is_loopback());
        match &ui_dir {
            Some(dir) => tracing::info!(dir = %dir.display(), "serving the web UI"),
            None => tracing::warn!("the web UI is not built (ui/dist); build it with `make run`, or pass --ui-dir"),
        }
        let web_auth = api::WebAuth::load(data_dir.clone(), login_required);
        let app = api::router(ApiState {
            http: Arc::default(),
            store: store.clone(),
            registry,
            bus: bus.clone(),
            health: health.clone(),
            shutdown: shutdown.clone(),
            directory,
            sessions: mqtt.sessions.clone(),
            ca_pem: Arc::from(mqtt.ca_pem.as_str()),
            site: config.site.clone(),
            tls_dir: data_dir.join("tls"),
            lifecycle,
            data_dir: data_dir.clone(),
            tag_settings,
            tasks: task_service,
            alerts: alert_service.clone(),
            configs,
            heard,
            ui_dir: ui_dir.clone(),
            web_auth: web_auth.clone(),
            own_names: Arc::new(own_names),
            settings: Arc::new(api::settings_summary(&config, &data_dir, login_required)),
            config: Arc::new(config.clone()),
            upstreams,
        });
        spawn_http_server(&tasks, http_listener, app, shutdown.clone(), "HTTP API");

        let runtime = RuntimeInfo {
            pid: std::process::id(),
            mqtt: mqtt.addrs.tcp,
            mqtt_listeners: mqtt.addrs,
            http: http_addr,
            ingest: ingest_addr,
            data_dir: data_dir.clone(),
            started_at: now_ms(),
        };
        let runtime_json = serde_json::to_string_pretty(&runtime)?;
        std::fs::write(data_dir.join(RUNTIME_FILE), runtime_json)
            .with_context(|| format!("cannot write {} in {}", RUNTIME_FILE, data_dir.display()))?;
        tracing::info!(
            mqtt = %format!("mqtt://{}", mqtt.addrs.tcp),
            mqtts = %mqtt.addrs.tls.map(|a| format!("mqtts://{a}")).unwrap_or_else(|| "off".into()),
            ws = %mqtt.addrs.ws.map(|a| format!("ws://{a}/mqtt")).unwrap_or_else(|| "off".into()),
            wss = %mqtt.addrs.wss.map(|a| format!("wss://{a}/mqtt")).unwrap_or_else(|| "off".into()),
            http = %format!("http://{http_addr}"),
            data = %data_dir.display(),
            site = %config.site,
            "Gatehouse is running"
        );
        Ok(Gateway {
            runtime,
            health,
            store,
            bus,
            ingress,
            web_auth,
            scan_switch,
            alerts: alert_service,
            shutdown,
            store_shutdown,
            tasks,
            writer,
            fatal: fatal.reason,
        })
    }

    /// The gateway's root shutdown token: cancelling it asks the gateway to stop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Set when a part of the gateway failed beyond repair and stopped it; the daemon then exits
    /// with status 1 so that systemd restarts it.
    pub fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops everything and waits (a few seconds at most) until the store has committed.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait()).await.is_err() {
            tracing::warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}; continuing shutdown");
        }
        self.store_shutdown.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.writer.join()).await.is_err() {
            tracing::error!("the store writer did not finish within {SHUTDOWN_GRACE:?}; recent readings may be lost");
        }
        let _ = std::fs::remove_file(self.runtime.data_dir.join(RUNTIME_FILE));
        tracing::info!("stopped");
    }
}
