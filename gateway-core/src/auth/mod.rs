//! Identity and authorization for the MQTT broker: who may connect (identities with argon2id
//! password hashes, stored in SQLite), and what each role may publish and subscribe to.
//!
//! Roles and their topics are specified in docs/security.md and docs/protocol.md; the rules are
//! built here, in one place, by [`Identity::acl`].

pub mod acl;
mod directory;
pub mod password;

pub use acl::{Access, Acl, Rule};
pub(crate) use directory::constant_time_eq;
pub use directory::{AuthError, Authenticated, Directory, DirectoryError, NewIdentity};

use serde::{Deserialize, Serialize};

use crate::topics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A claimed LAN device: only its own topics.
    Device,
    /// A factory-fresh device registering itself: only its own provisioning topics.
    Provisioning,
    /// An integration (Home Assistant, Node-RED): reads telemetry and status,
    /// reads and writes discovery topics, plus configured extra rules.
    Service,
    /// A remote Ruuvi Gateway (or BLE proxy) feeding advertisements: publishes
    /// `ruuvi/<gw MAC>/<tag MAC>` and `…/gw_status`, may post to the HTTP ingest, reads nothing.
    Receiver,
    /// Home Assistant: what `service` reads, plus pressing the buttons and selects Gatehouse
    /// publishes (`gatehouse/{site}/ha/+/+/set`, which become tasks), plus configured extra rules.
    #[serde(rename = "homeassistant")]
    HomeAssistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::Provisioning => "provisioning",
            Role::Service => "service",
            Role::Receiver => "receiver",
            Role::HomeAssistant => "homeassistant",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "device" => Some(Role::Device),
            "provisioning" => Some(Role::Provisioning),
            "service" => Some(Role::Service),
            "receiver" => Some(Role::Receiver),
            "homeassistant" => Some(Role::HomeAssistant),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub username: String,
    pub role: Role,
    /// The tenant: the identity can never reach another site's topics.
    pub site: String,
    /// Extra rules (service accounts only), validated by [`validate_extra_rules`].
    pub rules: Vec<Rule>,
    pub enabled: bool,
    pub description: Option<String>,
    pub created_at: i64,
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// A new secret handed to the device but not used yet: either secret authenticates until the
    /// device logs in with the new one, which then replaces the old.
    #[serde(skip)]
    pub next_password_hash: Option<String>,
}

impl Identity {
    /// The session's access rules for a connection with `client_id`.
    pub fn acl(&self, client_id: &str) -> Acl {
        let site = &self.site;
        let mut rules = match self.role {
            Role::Device => {
                let id = &self.username;
                let mut rules: Vec<Rule> = topics::DEVICE_PUBLISHES
                    .iter()
                    .map(|leaf| Rule::new(topics::device_topic(site, id, leaf), Access::Write))
                    .collect();
                rules.extend(
                    topics::DEVICE_SUBSCRIBES
                        .iter()
                        .map(|leaf| Rule::new(topics::device_topic(site, id, leaf), Access::Read)),
                );
                rules
            }
            Role::Provisioning => vec![
                Rule::new(topics::provisioning_request(site, client_id), Access::Write),
                Rule::new(topics::provisioning_reply(site, client_id), Access::Read),
            ],
            Role::Service => service_rules(site),
            Role::Receiver => vec![Rule::new(topics::RUUVI_GATEWAY_TOPICS, Access::Write)],
            Role::HomeAssistant => {
                let mut rules = service_rules(site);
                rules.push(Rule::new(crate::homeassistant::discovery::command_filter(site), Access::Write));
                rules
            }
        };
        if matches!(self.role, Role::Service | Role::HomeAssistant) {
            rules.extend(self.rules.iter().cloned());
        }
        Acl { rules }
    }

    /// Whether this identity may connect with `client_id`.
    pub fn allows_client_id(&self, client_id: &str) -> bool {
        match self.role {
            Role::Device => client_id == self.username,
            Role::Provisioning => valid_device_id(client_id),
            Role::Service | Role::HomeAssistant => true,
            // A Ruuvi Gateway's client id is its MAC by default; never a device's id, so a
            // receiver cannot take over a device's session.
            Role::Receiver => client_id == self.username || !valid_device_id(client_id),
        }
    }
}

/// What every service account of `site` may do without granted rules (homeassistant accounts
/// too, plus their command topics).
fn service_rules(site: &str) -> Vec<Rule> {
    vec![
        Rule::new(format!("devices/{site}/+/telemetry"), Access::Read),
        Rule::new(format!("devices/{site}/+/status"), Access::Read),
        Rule::new(format!("devices/{site}/+/alert"), Access::Read),
        Rule::new(format!("gatehouse/{site}/#"), Access::Read),
        Rule::new("homeassistant/#", Access::ReadWrite),
    ]
}

/// The access of a service account of `site` with no granted rules.
pub fn service_acl(site: &str) -> Acl {
    Acl { rules: service_rules(site) }
}

/// Device ids are lower-case letters, digits, `-` and `_`, 1–64 characters, so that they are safe
/// as topic levels and client ids.
pub fn valid_device_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Extra rules may not wildcard the site level of the gateway's namespaces, nor name another
/// site: sites are tenants.
pub fn validate_extra_rules(site: &str, rules: &[Rule]) -> Result<(), String> {
    for rule in rules {
        if !acl::valid_topic_filter(&rule.filter) {
            return Err(format!("`{}` is not a valid topic filter", rule.filter));
        }
        let mut levels = rule.filter.split('/');
        let first = levels.next().unwrap_or_default();
        if first == "#" || first == "+" {
            return Err(format!("`{}` would reach every site; start the filter with a topic prefix", rule.filter));
        }
        if topics::SITE_SCOPED_ROOTS.contains(&first) && levels.next() != Some(site) {
            return Err(format!("`{}` must stay inside site `{site}` ({first}/{site}/…)", rule.filter));
        }
        if first.starts_with('$') {
            return Err(format!("`{}`: system topics cannot be granted", rule.filter));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(role: Role, username: &str, rules: Vec<Rule>) -> Identity {
        Identity {
            username: username.into(),
            role,
            site: "home".into(),
            rules,
            enabled: true,
            description: None,
            created_at: 0,
            password_hash: None,
            next_password_hash: None,
        }
    }

    /// The ACL matrix: every role × topic class × publish/subscribe.
    #[test]
    fn acl_matrix() {
        let device = identity(Role::Device, "d1", vec![]).acl("d1");
        let provisioning = identity(Role::Provisioning, "provision", vec![]).acl("newdev");
        let service = identity(Role::Service, "ha", vec![]).acl("ha-client");
        // (topic or filter, device pub, device sub, provisioning pub, provisioning sub, service pub, service sub)
        let matrix = [
            ("devices/home/d1/telemetry", true, false, false, false, false, true),
            ("devices/home/d1/status", true, false, false, false, false, true),
            ("devices/home/d1/alert", true, false, false, false, false, true),
            ("devices/home/d1/command_response", true, false, false, false, false, false),
            ("devices/home/d1/commands", false, true, false, false, false, false),
            ("devices/home/d1/config", false, true, false, false, false, false),
            ("devices/home/d1/config_reported", true, false, false, false, false, false),
            ("devices/home/d1/credentials", false, true, false, false, false, false),
            ("devices/home/d2/credentials", false, false, false, false, false, false),
            ("devices/home/d2/telemetry", false, false, false, false, false, true),
            ("devices/home/d2/commands", false, false, false, false, false, false),
            ("devices/lab/d1/telemetry", false, false, false, false, false, false),
            ("devices/home/+/telemetry", false, false, false, false, false, true),
            ("devices/+/+/telemetry", false, false, false, false, false, false),
            ("devices/home/d1/#", false, false, false, false, false, false),
            ("#", false, false, false, false, false, false),
            ("provisioning/home/newdev/register", false, false, true, false, false, false),
            ("provisioning/home/newdev/reply", false, false, false, true, false, false),
            ("provisioning/home/other/reply", false, false, false, false, false, false),
            ("gatehouse/home/health", false, false, false, false, false, true),
            ("homeassistant/sensor/x/config", false, false, false, false, true, true),
            ("$SYS/broker/clients", false, false, false, false, false, false),
        ];
        for (topic, dp, ds, pp, ps, sp, ss) in matrix {
            let is_filter = topic.contains(['+', '#']);
            let check = |acl: &Acl, publish: bool| {
                if publish {
                    acl.can_publish(topic)
                } else {
                    acl.can_subscribe(topic)
                }
            };
            assert_eq!(check(&device, true), dp && !is_filter, "device publish {topic}");
            assert_eq!(check(&device, false), ds, "device subscribe {topic}");
            assert_eq!(check(&provisioning, true), pp, "provisioning publish {topic}");
            assert_eq!(check(&provisioning, false), ps, "provisioning subscribe {topic}");
            assert_eq!(check(&service, true), sp, "service publish {topic}");
            assert_eq!(check(&service, false), ss, "service subscribe {topic}");
        }
    }

    /// The `homeassistant` role: everything `service` may do, plus HA's command topics of its
    /// own site, and nothing else. `service` may not press buttons.
    #[test]
    fn homeassistant_role_matrix() {
        let ha = identity(Role::HomeAssistant, "ha", vec![]).acl("ha-client");
        let service = identity(Role::Service, "viewer", vec![]).acl("viewer");
        // (topic or filter, homeassistant publish, homeassistant subscribe, service publish)
        let matrix = [
            ("gatehouse/home/ha/esp-1/reboot/set", true, true, false),
            ("gatehouse/home/ha/esp-1/reboot/task", false, true, false),
            ("gatehouse/lab/ha/esp-1/reboot/set", false, false, false),
            ("gatehouse/home/ha/+/+/set", false, true, false),
            ("gatehouse/home/health", false, true, false),
            ("gatehouse/home/status", false, true, false),
            ("homeassistant/status", true, true, true),
            ("homeassistant/device/gatehouse_x/config", true, true, true),
            ("homeassistant/#", false, true, false),
            ("devices/home/d1/telemetry", false, true, false),
            ("devices/home/d1/status", false, true, false),
            ("devices/home/d1/commands", false, false, false),
            ("devices/home/d1/config", false, false, false),
            ("devices/lab/d1/telemetry", false, false, false),
            ("provisioning/home/x/register", false, false, false),
            ("ruuvi/AA:BB:CC:DD:EE:FF/gw_status", false, false, false),
            ("#", false, false, false),
        ];
        for (topic, hp, hs, sp) in matrix {
            let is_filter = topic.contains(['+', '#']);
            assert_eq!(ha.can_publish(topic), hp && !is_filter, "homeassistant publish {topic}");
            assert_eq!(ha.can_subscribe(topic), hs, "homeassistant subscribe {topic}");
            assert_eq!(service.can_publish(topic), sp && !is_filter, "service publish {topic}");
        }
        assert_eq!(Role::parse("homeassistant"), Some(Role::HomeAssistant));
        assert_eq!(Role::HomeAssistant.as_str(), "homeassistant");
        assert!(identity(Role::HomeAssistant, "ha", vec![]).allows_client_id("anything"));
    }

    #[test]
    fn client_id_binding() {
        assert!(identity(Role::Device, "d1", vec![]).allows_client_id("d1"));
        assert!(!identity(Role::Device, "d1", vec![]).allows_client_id("d2"));
        assert!(identity(Role::Provisioning, "p", vec![]).allows_client_id("esp32-a1b2"));
        assert!(!identity(Role::Provisioning, "p", vec![]).allows_client_id("Bad Id"));
        assert!(identity(Role::Service, "ha", vec![]).allows_client_id("anything"));
    }

    #[test]
    fn extra_rules_stay_inside_the_site() {
        let ok = |filter: &str| validate_extra_rules("home", &[Rule::new(filter, Access::ReadWrite)]);
        assert!(ok("devices/home/+/commands").is_ok());
        assert!(ok("lab/#").is_ok());
        assert!(ok("devices/#").is_err());
        assert!(ok("devices/+/x/commands").is_err());
        assert!(ok("devices/lab/x/commands").is_err());
        assert!(ok("#").is_err());
        assert!(ok("+/x").is_err());
        assert!(ok("$SYS/#").is_err());
        assert!(ok("a/#/b").is_err());
        let extra =
            identity(Role::Service, "nodered", vec![Rule::new("devices/home/+/commands", Access::Write)]).acl("nr");
        assert!(extra.can_publish("devices/home/d1/commands"));
    }
}
