//! Topic access control: pure matching of MQTT topics and filters against an identity's rules.
//!
//! A PUBLISH is allowed when some rule with write access matches its topic. A SUBSCRIBE filter is
//! allowed only when every topic it could match is readable: it must be *covered* by a rule
//! filter with read access (so a device allowed `devices/home/d1/commands` may not subscribe to
//! `#` or `devices/+/d1/commands`). Topics starting with `$` are never matched by a leading
//! wildcard, as the MQTT specification requires.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    pub fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }
    pub fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub filter: String,
    pub access: Access,
}

impl Rule {
    pub fn new(filter: impl Into<String>, access: Access) -> Rule {
        Rule { filter: filter.into(), access }
    }
}

/// The rules of one session, already specialised to its site, device id and client id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acl {
    pub rules: Vec<Rule>,
}

impl Acl {
    /// Unrestricted access (the gateway's own links).
    pub fn everything() -> Acl {
        Acl { rules: vec![Rule::new("#", Access::ReadWrite)] }
    }

    pub fn can_publish(&self, topic: &str) -> bool {
        valid_topic_name(topic) && self.rules.iter().any(|r| r.access.can_write() && filter_matches(&r.filter, topic))
    }

    pub fn can_subscribe(&self, filter: &str) -> bool {
        // Shared subscriptions (`$share/<group>/<filter>`) are refused: rumqttd's router panics
        // when one session holds both `X` and `$share/g/X` (one data request per filter).
        if filter.starts_with("$share/") {
            return false;
        }
        valid_topic_filter(filter) && self.rules.iter().any(|r| r.access.can_read() && filter_covers(&r.filter, filter))
    }
}

/// A topic name for PUBLISH: non-empty, no wildcards, no NUL.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// A topic filter: `#` only as the last level, `+` only as a whole level, no NUL.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == levels.len() - 1,
        "+" => true,
        other => !other.contains(['+', '#']),
    })
}

/// Whether `topic` (a topic name) matches `filter`.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic matched by `inner` is also matched by `outer` (both are filters).
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    if inner.starts_with('$') && (outer.starts_with('+') || outer.starts_with('#')) {
        return false;
    }
    let mut outer_levels = outer.split('/');
    let mut inner_levels = inner.split('/');
    loop {
        match (outer_levels.next(), inner_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(i)) if i != "#" => {}
            (Some(o), Some(i)) if o == i && o != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_table() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true), // `#` matches the parent level too
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/+/c", "a//c", true),
            ("a/b", "a/b/", false),
            ("+", "", true),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(filter_matches(filter, topic), expected, "{filter} vs {topic}");
        }
    }

    #[test]
    fn coverage_table() {
        let cases = [
            ("devices/home/d1/commands", "devices/home/d1/commands", true),
            ("devices/home/d1/#", "devices/home/d1/commands", true),
            ("devices/home/d1/#", "devices/home/d1/#", true),
            ("devices/home/d1/#", "devices/home/+/commands", false),
            ("devices/home/+/telemetry", "devices/home/d1/telemetry", true),
            ("devices/home/+/telemetry", "devices/home/+/telemetry", true),
            ("devices/home/+/telemetry", "devices/home/#", false),
            ("devices/home/+/telemetry", "devices/+/+/telemetry", false),
            ("devices/home/d1/commands", "#", false),
            ("devices/home/d1/commands", "devices/home/d1/+", false),
            ("#", "anything/#", true),
            ("#", "$SYS/#", false),
            ("a/+", "a/+/b", false),
            ("a/#", "a", true),
        ];
        for (outer, inner, expected) in cases {
            assert_eq!(filter_covers(outer, inner), expected, "{outer} covers {inner}");
        }
    }

    #[test]
    fn validity_table() {
        for (filter, ok) in
            [("a/#", true), ("a/#/b", false), ("a/b+", false), ("+/+", true), ("", false), ("a\0b", false), ("#", true)]
        {
            assert_eq!(valid_topic_filter(filter), ok, "{filter:?}");
        }
        for (topic, ok) in [("a/b", true), ("a/+", false), ("a/#", false), ("", false), ("a\0", false)] {
            assert_eq!(valid_topic_name(topic), ok, "{topic:?}");
        }
    }

    #[test]
    fn acl_publish_and_subscribe() {
        let acl = Acl {
            rules: vec![
                Rule::new("devices/home/d1/telemetry", Access::Write),
                Rule::new("devices/home/d1/commands", Access::Read),
                Rule::new("lab/#", Access::ReadWrite),
            ],
        };
        assert!(acl.can_publish("devices/home/d1/telemetry"));
        assert!(!acl.can_publish("devices/home/d2/telemetry"));
        assert!(!acl.can_publish("devices/home/d1/commands"), "read-only");
        assert!(!acl.can_subscribe("devices/home/d1/telemetry"), "write-only");
        assert!(acl.can_subscribe("devices/home/d1/commands"));
        assert!(acl.can_subscribe("lab/x/#"));
        assert!(!acl.can_subscribe("$share/g/lab/x"), "shared subscriptions are refused");
        assert!(!acl.can_subscribe("$share//lab/x"));
        assert!(!acl.can_subscribe("#"));
        assert!(!acl.can_publish("lab/+"), "wildcards are not topic names");
        assert!(Acl::everything().can_subscribe("devices/#"));
    }
}
