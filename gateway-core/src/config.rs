//! Configuration: one TOML file, then `GATEHOUSE_<SECTION>_<KEY>` environment overrides, then
//! command-line flags (applied by the caller). Every key is documented in docs/configuration.md.
//! Bad configuration fails at start with the key and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The tenant segment of every device topic (`devices/{site}/…`).
    pub site: String,
    /// Where the SQLite database and generated files live. Empty: the platform's data directory.
    pub data_dir: Option<PathBuf>,
    pub log: LogConfig,
    pub mqtt: MqttConfig,
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub devices: DevicesConfig,
    pub pipeline: PipelineConfig,
    pub ble: BleConfig,
    pub receivers: ReceiversConfig,
    pub ruuvi_output: RuuviOutputConfig,
    pub simulator: SimulatorConfig,
    pub homeassistant: HomeAssistantConfig,
    pub alerts: AlertsConfig,
    /// This gateway's name in a fleet: `{gateway_id}` in upstream topic prefixes and client ids.
    /// Empty: the host name.
    pub gateway_id: String,
    /// External MQTT brokers that get chosen topics and may send tasks (`[[upstream]]`).
    pub upstream: Vec<UpstreamConfig>,
}

/// A string that never appears in logs or `Debug` output (passwords).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One upstream broker: a bridge with a durable, bounded buffer (docs/upstream.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Names the bridge in the API, logs, metrics and its buffer file (`[a-z0-9_-]`).
    pub name: String,
    /// `mqtt://host:port` or `mqtts://host:port` (default ports 1883 and 8883).
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Read the password from this file instead (first line), so the config can be shared.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM certificates to trust for `mqtts://`, instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) and its key, for brokers that authenticate by certificate.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The MQTT client id upstream (default `{gateway_id}-{name}`); `{gateway_id}` is replaced.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Prepended to every forwarded topic; `{gateway_id}` and `{site}` are replaced.
    #[serde(default = "default_upstream_prefix")]
    pub prefix: String,
    /// What to forward: `telemetry`, `status`, `alerts`, `health`, or local topic filters.
    #[serde(default = "default_upstream_forward")]
    pub forward: Vec<String>,
    /// Accept task requests on `{prefix}/tasks/create`.
    #[serde(default = "default_true")]
    pub commands: bool,
    /// The buffer's bound in bytes (topic + payload); the oldest messages are dropped beyond it.
    #[serde(default = "default_upstream_buffer_bytes")]
    pub buffer_max_bytes: u64,
    /// Messages older than this are dropped from the buffer unsent.
    #[serde(default = "default_upstream_buffer_age", with = "humantime_serde")]
    pub buffer_max_age: Duration,
    #[serde(default = "default_upstream_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Reconnect delays double from `reconnect_min` to `reconnect_max`, with random jitter.
    #[serde(default = "default_upstream_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(default = "default_upstream_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
}

fn default_true() -> bool {
    true
}

fn default_upstream_prefix() -> String {
    "gatehouse/{gateway_id}".into()
}

fn default_upstream_forward() -> Vec<String> {
    ["telemetry", "status", "alerts"].map(String::from).to_vec()
}

fn default_upstream_buffer_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_upstream_buffer_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_upstream_keep_alive() -> Duration {
    Duration::from_secs(30)
}

fn default_upstream_reconnect_min() -> Duration {
    Duration::from_secs(1)
}

fn default_upstream_reconnect_max() -> Duration {
    Duration::from_secs(60)
}

/// Outbound notifications of alerts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// HTTP endpoints that get a POST for every alert raised, cleared or acknowledged.
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Which changes to send: any of `raised`, `cleared`, `acknowledged` (default: all).
    #[serde(default = "all_alert_events")]
    pub events: Vec<String>,
    /// Signs each body with HMAC-SHA256 (`X-Gatehouse-Signature: sha256=<hex>`) when set.
    #[serde(default)]
    pub secret: Option<String>,
    /// Attempts per alert before it is given up (counted).
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM certificates to trust for an https:// URL, instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn all_alert_events() -> Vec<String> {
    ["raised", "cleared", "acknowledged"].map(String::from).to_vec()
}

fn default_webhook_attempts() -> u32 {
    8
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Home Assistant MQTT discovery: Gatehouse, its adopted tags and active LAN devices appear in
/// Home Assistant (docs/protocol.md, "Home Assistant").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    pub enabled: bool,
    /// HA's discovery prefix (HA's default `homeassistant`).
    pub prefix: String,
    /// A tag's sensors become unavailable in HA after this long without a reading; `0s`: never.
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        // On by default, like Zigbee2MQTT: the configs only sit on our own broker until an
        // account with the `homeassistant` role reads them.
        HomeAssistantConfig { enabled: true, prefix: "homeassistant".into(), expire_after: Duration::from_secs(60) }
    }
}

/// Remote Ruuvi Gateways feeding us (MQTT needs no setting: they publish to the broker).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiversConfig {
    /// LAN listener for `POST /ruuvi` (the Ruuvi Gateway's "custom HTTP server"); `"off"` disables it.
    #[serde(deserialize_with = "optional_address")]
    pub http_listen: Option<SocketAddr>,
}

/// Publishing every tag in the Ruuvi Gateway's MQTT format, for RuuviBridge, Node-RED flows and
/// other consumers written for the official gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuuviOutputConfig {
    pub enabled: bool,
    /// `ruuvi_raw`, `ruuvi_raw_and_decoded` or `ruuvi_decoded` (the gateway's `mqtt_data_format`).
    pub mode: crate::ruuvi_gateway::OutputMode,
    /// The MAC-style id in `ruuvi/<id>/<tag MAC>` and in `gw_mac`; empty: one generated at first
    /// start and kept in the data directory.
    pub gateway_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `gateway_core=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Plain MQTT (TCP). All interfaces by default: LAN devices connect here.
    pub listen: SocketAddr,
    /// MQTT over TLS; `"off"` disables it.
    #[serde(deserialize_with = "optional_address")]
    pub tls_listen: Option<SocketAddr>,
    /// MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`); `"off"` disables it.
    #[serde(deserialize_with = "optional_address")]
    pub ws_listen: Option<SocketAddr>,
    /// MQTT over secure WebSocket; `"off"` disables it.
    #[serde(deserialize_with = "optional_address")]
    pub wss_listen: Option<SocketAddr>,
    /// Web pages (origins such as `"https://dashboard.lan"`) on other hosts whose browsers may
    /// open MQTT WebSockets; `"*"`: any page. Pages of the gateway's own host always may, and
    /// clients that send no `Origin` (devices, tools) are not affected.
    pub websocket_origins: Vec<String>,
    /// Extra DNS names and IP addresses for the generated server certificate (the host name,
    /// `localhost` and the loopback addresses are always included).
    pub tls_names: Vec<String>,
    /// Per client: publishes per second (0 = unlimited) and the burst allowed above it.
    pub publish_rate: f64,
    pub publish_burst: f64,
    /// Per client: publish bytes (topic + payload) per second and the burst allowed above it.
    pub byte_rate: f64,
    pub byte_burst: f64,
    /// Simultaneous connections from one IP address (0 = unlimited).
    pub max_connections_per_address: usize,
    /// A client id that disconnects more than `flap_max_disconnects` times within
    /// `flap_window` is refused for `flap_ban` (0 disables).
    pub flap_max_disconnects: usize,
    #[serde(with = "humantime_serde")]
    pub flap_window: Duration,
    #[serde(with = "humantime_serde")]
    pub flap_ban: Duration,
    /// How often the gateway publishes `gatehouse/{site}/health`.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Largest MQTT packet accepted from a client, in bytes.
    pub max_packet_size: usize,
    /// Time a new connection has to send CONNECT.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Per subscription filter, the broker keeps at most `segment_size × segment_count` bytes of
    /// messages for subscribers that lag behind.
    pub segment_size: usize,
    pub segment_count: usize,
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Whether the API and UI need a login. Empty: only when `listen` is not a loopback address.
    pub require_login: Option<bool>,
    /// The built web UI (`ui/dist`). Empty: next to the binary in a source tree
    /// (`../../ui/dist`), then `../share/gatehouse/ui`, then `/usr/share/gatehouse/ui`.
    pub ui_dir: Option<PathBuf>,
    /// DNS names the gateway is reached by besides its host name, `<name>.local`, `localhost`
    /// and `mqtt.tls_names` (see [`crate::origin`]).
    pub host_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Readings older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often old readings are looked for.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// A batch of readings is written when it holds this many rows…
    pub batch_size: usize,
    /// …or when its first row has waited this long.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesConfig {
    /// A device with no reading for this long is reported offline.
    #[serde(with = "humantime_serde")]
    pub offline_after: Duration,
    /// How long a claim code stays valid.
    #[serde(with = "humantime_serde")]
    pub claim_code_ttl: Duration,
    /// The longest a pairing window may stay open.
    #[serde(with = "humantime_serde")]
    pub pairing_max: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// The same (MAC, format, sequence) heard again within this window is a duplicate.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// When not empty, only these tags (MAC addresses) are processed; the rest are counted as
    /// blocked. For gateways in shared buildings that should record only their own tags.
    pub allow_tags: Vec<String>,
    /// Tags (MAC addresses) never processed, counted as blocked (like blocking one in the API).
    pub deny_tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BleConfig {
    pub enabled: bool,
    /// Adapter name such as `hci0`; empty takes the first adapter.
    pub adapter: String,
    /// With Ruuvi tags known, no Ruuvi advertisement for this long makes the watchdog step in.
    #[serde(with = "humantime_serde")]
    pub watchdog: Duration,
    /// Scan restarts the watchdog tries before it reconnects to BlueZ with a new manager.
    pub scan_restarts: u32,
    /// New managers the watchdog tries before it gives up and the process exits (status 1).
    pub manager_restarts: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Number of simulated tags; 0 disables the simulator.
    pub tags: usize,
    /// Seed for reproducible tags and data; none picks a random one.
    pub seed: Option<u64>,
    /// Every n-th simulated tag is a Ruuvi Air (data format E1); 0 for none.
    pub air_every: usize,
    /// Advertisement interval of each simulated tag.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Probability that an advertisement is not received at all.
    pub drop_probability: f64,
    /// Probability that an advertisement is received more than once (up to three times).
    pub duplicate_probability: f64,
    /// Mean time between a tag's silent periods (tag out of range); zero disables them.
    #[serde(with = "humantime_serde")]
    pub silence_every: Duration,
    #[serde(with = "humantime_serde")]
    pub silence_duration: Duration,
    /// Optional per-tag profiles; tags beyond the list get generated profiles.
    #[serde(rename = "tag")]
    pub tag_profiles: Vec<TagProfile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TagProfile {
    pub name: Option<String>,
    /// `tag` (RuuviTag, DF5) or `air` (Ruuvi Air, E1).
    pub kind: SimulatedKind,
    /// Daily mean temperature in °C and the half-amplitude of the day/night cycle.
    pub temperature: f64,
    pub temperature_swing: f64,
    /// Daily mean relative humidity in %.
    pub humidity: f64,
    /// Average number of movement events per hour.
    pub movements_per_hour: f64,
    /// Starting battery voltage.
    pub battery: f64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SimulatedKind {
    Tag,
    Air,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            site: "home".into(),
            data_dir: None,
            log: LogConfig::default(),
            mqtt: MqttConfig::default(),
            http: HttpConfig::default(),
            store: StoreConfig::default(),
            devices: DevicesConfig::default(),
            pipeline: PipelineConfig::default(),
            ble: BleConfig::default(),
            // Off until wanted: it would face the LAN with plain HTTP.
            receivers: ReceiversConfig { http_listen: None },
            ruuvi_output: RuuviOutputConfig {
                enabled: false,
                mode: crate::ruuvi_gateway::OutputMode::Raw,
                gateway_id: String::new(),
            },
            simulator: SimulatorConfig::default(),
            homeassistant: HomeAssistantConfig::default(),
            alerts: AlertsConfig::default(),
            gateway_id: String::new(),
            upstream: Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            // rumqttd warns once per dropped segment when a subscriber lags; the broker's own
            // counters report that instead of flooding the log.
            level: "info,rumqttd=error".into(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: ([0, 0, 0, 0], 1883).into(),
            tls_listen: Some(([0, 0, 0, 0], 8883).into()),
            ws_listen: Some(([0, 0, 0, 0], 9001).into()),
            websocket_origins: Vec::new(),
            wss_listen: Some(([0, 0, 0, 0], 9443).into()),
            tls_names: Vec::new(),
            publish_rate: 200.0,
            publish_burst: 1000.0,
            byte_rate: 1024.0 * 1024.0,
            byte_burst: 4.0 * 1024.0 * 1024.0,
            max_connections_per_address: 64,
            flap_max_disconnects: 15,
            flap_window: Duration::from_secs(60),
            flap_ban: Duration::from_secs(300),
            health_interval: Duration::from_secs(30),
            max_packet_size: 256 * 1024,
            connect_timeout: Duration::from_secs(5),
            segment_size: 1024 * 1024,
            segment_count: 4,
            max_connections: 10_000,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: ([127, 0, 0, 1], 8080).into(), require_login: None, ui_dir: None, host_names: Vec::new() }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention: Duration::from_secs(90 * 24 * 3600),
            retention_interval: Duration::from_secs(3600),
            batch_size: 1000,
            flush_interval: Duration::from_millis(250),
        }
    }
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            offline_after: Duration::from_secs(90),
            claim_code_ttl: Duration::from_secs(24 * 3600),
            pairing_max: Duration::from_secs(5 * 60),
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig { dedup_window: Duration::from_secs(60), allow_tags: Vec::new(), deny_tags: Vec::new() }
    }
}

impl Default for ReceiversConfig {
    fn default() -> Self {
        Config::default().receivers
    }
}

impl Default for RuuviOutputConfig {
    fn default() -> Self {
        Config::default().ruuvi_output
    }
}

impl Default for BleConfig {
    fn default() -> Self {
        BleConfig {
            enabled: true,
            adapter: String::new(),
            watchdog: Duration::from_secs(120),
            scan_restarts: 2,
            manager_restarts: 2,
        }
    }
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            tags: 0,
            seed: None,
            air_every: 5,
            interval: Duration::from_secs(1),
            drop_probability: 0.1,
            duplicate_probability: 0.25,
            silence_every: Duration::from_secs(30 * 60),
            silence_duration: Duration::from_secs(120),
            tag_profiles: Vec::new(),
        }
    }
}

impl Default for TagProfile {
    fn default() -> Self {
        TagProfile {
            name: None,
            kind: SimulatedKind::Tag,
            temperature: 21.0,
            temperature_swing: 2.0,
            humidity: 45.0,
            movements_per_hour: 2.0,
            battery: 3.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error(
        "environment variable {var} does not name a config key; expected GATEHOUSE_<SECTION>_<KEY>, \
         for example GATEHOUSE_MQTT_LISTEN (see docs/configuration.md)"
    )]
    UnknownEnv { var: String },
}

const ENV_PREFIX: &str = "GATEHOUSE_";

/// `"off"` (or an empty string) disables a listener; anything else must be an address.
fn optional_address<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_optional_address(&text).map_err(serde::de::Error::custom)
}

pub fn parse_optional_address(text: &str) -> Result<Option<SocketAddr>, String> {
    match text.trim() {
        "" | "off" => Ok(None),
        other => other
            .parse()
            .map(Some)
            .map_err(|_| format!("`{other}` is not an address such as 0.0.0.0:8883, nor \"off\"")),
    }
}

impl Config {
    /// Reads `file` (when given), then applies `GATEHOUSE_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax { path: path.to_path_buf(), message: e.to_string() })?
            }
            None => toml::Table::new(),
        };
        for (var, value) in env {
            if let Some(name) = var.strip_prefix(ENV_PREFIX) {
                apply_env_override(&mut table, &var, name, &value)?;
            }
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Invalid { key: e.path().to_string(), reason: e.inner().message().to_string() })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| Err(ConfigError::Invalid { key: key.into(), reason: reason.into() });
        for (index, hook) in self.alerts.webhooks.iter().enumerate() {
            if self.alerts.webhooks[..index].iter().any(|earlier| earlier.url == hook.url) {
                return invalid("alerts.webhooks.url", "the same URL twice: use one hook with both events lists");
            }
            let https = hook.url.starts_with("https://");
            if !(https || hook.url.starts_with("http://")) || hook.url.parse::<reqwest::Url>().is_err() {
                return invalid("alerts.webhooks.url", "must be an http:// or https:// URL");
            }
            if hook.ca_file.is_some() && !https {
                return invalid("alerts.webhooks.ca_file", "only for https:// URLs");
            }
            if let Some(event) =
                hook.events.iter().find(|e| !["raised", "cleared", "acknowledged"].contains(&e.as_str()))
            {
                return invalid(
                    "alerts.webhooks.events",
                    &format!("unknown event `{event}`: use raised, cleared, acknowledged"),
                );
            }
            if hook.max_attempts == 0 {
                return invalid("alerts.webhooks.max_attempts", "must be at least 1");
            }
        }
        if self.site.is_empty()
            || !self.site.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return invalid(
                "site",
                "use lower-case letters, digits, '-' and '_' only (it becomes an MQTT topic segment)",
            );
        }
        if self.store.retention.is_zero() {
            return invalid("store.retention", "must be longer than zero, e.g. \"90d\"");
        }
        if self.store.retention_interval < Duration::from_secs(1) {
            return invalid("store.retention_interval", "must be at least a second, e.g. \"1h\"");
        }
        if self.store.batch_size == 0 {
            return invalid("store.batch_size", "must be at least 1");
        }
        if self.mqtt.max_packet_size < 1024 {
            return invalid("mqtt.max_packet_size", "must be at least 1024 bytes");
        }
        if self.mqtt.segment_size < 1024 || self.mqtt.segment_count == 0 {
            return invalid("mqtt.segment_size", "segments must be at least 1024 bytes and segment_count at least 1");
        }
        if self.mqtt.publish_rate < 0.0 || self.mqtt.byte_rate < 0.0 {
            return invalid("mqtt.publish_rate", "rates cannot be negative (0 means unlimited)");
        }
        if (self.mqtt.publish_rate > 0.0 && self.mqtt.publish_burst < 1.0)
            || (self.mqtt.byte_rate > 0.0 && self.mqtt.byte_burst < self.mqtt.max_packet_size as f64)
        {
            return invalid(
                "mqtt.publish_burst",
                "bursts must allow at least one message (byte_burst at least max_packet_size)",
            );
        }
        if self.devices.claim_code_ttl < Duration::from_secs(1) {
            return invalid("devices.claim_code_ttl", "must be at least 1s");
        }
        if self.devices.pairing_max.is_zero() || self.devices.pairing_max > Duration::from_secs(30 * 60) {
            return invalid("devices.pairing_max", "must be between 1s and 30m (pairing windows are short on purpose)");
        }
        for (key, list) in
            [("pipeline.allow_tags", &self.pipeline.allow_tags), ("pipeline.deny_tags", &self.pipeline.deny_tags)]
        {
            if let Some(bad) = list.iter().find(|mac| mac.parse::<crate::ruuvi::Mac>().is_err()) {
                return invalid(key, &format!("`{bad}` is not a MAC address such as CB:B8:33:4C:88:4F"));
            }
        }
        if !self.ruuvi_output.gateway_id.is_empty()
            && self.ruuvi_output.gateway_id.parse::<crate::ruuvi::Mac>().is_err()
        {
            return invalid("ruuvi_output.gateway_id", "must be a MAC address such as C8:25:2D:8E:9C:2C, or empty");
        }
        if self.ble.watchdog < Duration::from_secs(1) {
            return invalid("ble.watchdog", "must be at least 1s (Ruuvi tags advertise about once a second)");
        }
        if self.mqtt.health_interval < Duration::from_secs(1) {
            return invalid("mqtt.health_interval", "must be at least 1s");
        }
        if self.mqtt.max_connections == 0 {
            return invalid("mqtt.max_connections", "must be at least 1");
        }
        for (key, p) in [
            ("simulator.drop_probability", self.simulator.drop_probability),
            ("simulator.duplicate_probability", self.simulator.duplicate_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return invalid(key, "must be between 0 and 1");
            }
        }
        if self.simulator.interval < Duration::from_millis(10) {
            return invalid("simulator.interval", "must be at least 10ms");
        }
        let prefix = &self.homeassistant.prefix;
        if prefix.is_empty()
            || prefix.starts_with('$')
            || prefix.contains(['+', '#', '\0'])
            || prefix.split('/').any(str::is_empty)
        {
            return invalid(
                "homeassistant.prefix",
                "must be a topic prefix such as `homeassistant` (no wildcards, no empty levels, not `$…`)",
            );
        }
        if !self.gateway_id.is_empty() && !crate::upstream::route::is_name(&self.gateway_id) {
            return invalid("gateway_id", "use letters, digits, '-' and '_' only (it becomes an MQTT topic segment)");
        }
        let mut names = std::collections::HashSet::new();
        for upstream in &self.upstream {
            if !names.insert(upstream.name.as_str()) {
                return invalid("upstream.name", &format!("`{}` is used twice", upstream.name));
            }
            if let Err((key, reason)) = crate::upstream::route::validate(upstream, &self.site) {
                return invalid(&format!("upstream.{key}"), &format!("[{}] {reason}", upstream.name));
            }
        }
        Ok(())
    }

    /// This gateway's fleet name: configured, or the host name (made topic-safe).
    pub fn resolved_gateway_id(&self) -> String {
        if !self.gateway_id.is_empty() {
            return self.gateway_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        crate::upstream::route::topic_safe(host.trim()).unwrap_or_else(|| "gatehouse".into())
    }

    /// The data directory: configured, or the platform's standard one
    /// (`~/.local/share/gatehouse` on Linux).
    pub fn resolved_data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            directories::ProjectDirs::from("org", "Gatehouse", "gatehouse")
                .map(|dirs| dirs.data_dir().to_path_buf())
                .unwrap_or_else(|| PathBuf::from(".gatehouse-data"))
        })
    }
}

/// `GATEHOUSE_MQTT_MAX_PACKET_SIZE=1000` sets `mqtt.max_packet_size`; `GATEHOUSE_SITE=lab` sets
/// `site`. Values are read as TOML (numbers, booleans) and fall back to plain strings.
fn apply_env_override(table: &mut toml::Table, var: &str, name: &str, raw: &str) -> Result<(), ConfigError> {
    const SECTIONS: &[&str] =
        &["log", "mqtt", "http", "store", "devices", "pipeline", "ble", "simulator", "homeassistant"];
    const TOP_LEVEL: &[&str] = &["site", "data_dir", "gateway_id"];
    let lower = name.to_ascii_lowercase();
    let value = parse_env_value(raw);
    if TOP_LEVEL.contains(&lower.as_str()) {
        table.insert(lower, value);
        return Ok(());
    }
    for section in SECTIONS {
        if let Some(key) = lower.strip_prefix(section).and_then(|rest| rest.strip_prefix('_')) {
            if key.is_empty() {
                break;
            }
            let entry = table.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section_table) = entry.as_table_mut() else {
                return Err(ConfigError::Invalid { key: section.to_string(), reason: "must be a table".into() });
            };
            section_table.insert(key.to_string(), value);
            return Ok(());
        }
    }
    Err(ConfigError::UnknownEnv { var: var.to_string() })
}

fn parse_env_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn load_str(toml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        Config::load(Some(file.path()), env(vars))
    }

    #[test]
    fn defaults_are_valid_and_loopback_only() {
        let config = Config::load(None, env(&[("PATH", "/bin")])).unwrap();
        assert_eq!(config.site, "home");
        assert!(config.mqtt.listen.ip().is_unspecified(), "LAN devices reach the broker");
        assert!(config.http.listen.ip().is_loopback(), "the API stays local until it has logins");
        assert_eq!(config.store.retention, Duration::from_secs(90 * 86400));
    }

    #[test]
    fn file_then_environment() {
        let config = load_str(
            "site = \"lab\"\n[mqtt]\nlisten = \"127.0.0.1:1999\"\n[store]\nretention = \"7d\"\n",
            &[("GATEHOUSE_MQTT_MAX_PACKET_SIZE", "4096"), ("GATEHOUSE_SITE", "attic")],
        )
        .unwrap();
        assert_eq!(config.site, "attic");
        assert_eq!(config.mqtt.listen.port(), 1999);
        assert_eq!(config.mqtt.max_packet_size, 4096);
        assert_eq!(config.store.retention, Duration::from_secs(7 * 86400));
    }

    #[test]
    fn listeners_can_be_turned_off() {
        let config = load_str(
            "[mqtt]\ntls_listen = \"off\"\nws_listen = \"127.0.0.1:0\"\n",
            &[("GATEHOUSE_MQTT_WSS_LISTEN", "off")],
        )
        .unwrap();
        assert_eq!(config.mqtt.tls_listen, None);
        assert_eq!(config.mqtt.ws_listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(config.mqtt.wss_listen, None);
    }

    #[test]
    fn simulator_profiles_from_file() {
        let config = load_str(
            "[simulator]\ntags = 2\nseed = 7\n[[simulator.tag]]\nname = \"Freezer\"\ntemperature = -18.0\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.simulator.tags, 2);
        assert_eq!(config.simulator.tag_profiles[0].name.as_deref(), Some("Freezer"));
        assert_eq!(config.simulator.tag_profiles[0].temperature, -18.0);
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let cases: &[(&str, &[(&str, &str)], &str)] = &[
            ("[mqtt]\nlisten = \"nonsense\"\n", &[], "config key `mqtt.listen`"),
            ("[store]\nretention = \"ninety days\"\n", &[], "config key `store.retention`"),
            ("[store]\nretention = \"0s\"\n", &[], "config key `store.retention`"),
            ("[store]\nretention_interval = \"10ms\"\n", &[], "config key `store.retention_interval`"),
            (
                "[[alerts.webhooks]]\nurl = \"http://a/h\"\n[[alerts.webhooks]]\nurl = \"http://a/h\"\n",
                &[],
                "the same URL twice",
            ),
            ("[mqtt]\nlisten_port = 1\n", &[], "unknown field `listen_port`"),
            ("site = \"My Home\"\n", &[], "config key `site`"),
            ("", &[("GATEHOUSE_MQTT_LISTN", "x")], "config key `mqtt.listn`"),
            ("", &[("GATEHOUSE_NOPE", "1")], "GATEHOUSE_NOPE does not name a config key"),
            ("[mqtt\n", &[], "is not valid TOML"),
            ("[simulator]\ndrop_probability = 2.0\n", &[], "`simulator.drop_probability`"),
        ];
        for (toml, vars, expected) in cases {
            let error = load_str(toml, vars).expect_err(toml).to_string();
            assert!(error.contains(expected), "{toml:?} {vars:?}: got {error:?}");
        }
    }
}
