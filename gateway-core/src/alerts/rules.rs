//! Alert rules as pure functions: which devices a rule watches, and — per rule and device — when
//! a value (or the lack of one) raises or clears an alert. Thresholds hold for a duration before
//! they raise and clear only past a separate level (hysteresis), so a value hovering at the
//! threshold does not flap.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// The field is above `threshold` (clears below `clear_at`).
    Above,
    /// The field is below `threshold` (clears above `clear_at`).
    Below,
    /// No reading at all from the device for `for_ms`.
    Silent,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: i64,
    pub name: String,
    /// `*` (every device), an exact id, or a prefix ending in `*` (`ruuvi-*`).
    pub devices: String,
    /// The telemetry field (not used by `silent`).
    pub field: Option<String>,
    pub condition: Condition,
    pub threshold: Option<f64>,
    /// Where an active alert clears; the threshold itself when not given.
    pub clear_at: Option<f64>,
    /// How long the condition must hold before the alert is raised.
    pub for_ms: i64,
    pub severity: String,
    pub enabled: bool,
    pub created_at: i64,
}

/// What a person sends to create a rule (`for` as a duration: `5m`, `90s`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleRequest {
    pub name: String,
    #[serde(default = "every_device")]
    pub devices: String,
    pub field: Option<String>,
    pub condition: Condition,
    pub threshold: Option<f64>,
    pub clear_at: Option<f64>,
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_duration: Option<std::time::Duration>,
    #[serde(default = "warning")]
    pub severity: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn every_device() -> String {
    "*".into()
}
fn warning() -> String {
    "warning".into()
}
fn enabled() -> bool {
    true
}

impl RuleRequest {
    /// Checks the request and makes a rule of it; the error says which field is wrong and why.
    pub fn into_rule(self, id: i64, created_at: i64) -> Result<Rule, String> {
        let name = self.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 64 {
            return Err("name: 1–64 characters".into());
        }
        let devices = self.devices.trim().to_string();
        let pattern = devices.strip_suffix('*').unwrap_or(&devices);
        if devices.is_empty()
            || pattern.contains('*')
            || !pattern.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err("devices: `*`, a device id, or an id prefix ending in `*` such as `ruuvi-*`".into());
        }
        if !["info", "warning", "critical"].contains(&self.severity.as_str()) {
            return Err("severity: one of info, warning, critical".into());
        }
        let for_ms = self.for_duration.map(|d| d.as_millis() as i64).unwrap_or(0);
        if for_ms > 7 * 86_400_000 {
            return Err("for: at most 7 days".into());
        }
        let (field, threshold, clear_at) = match self.condition {
            Condition::Silent => {
                if self.field.is_some() || self.threshold.is_some() || self.clear_at.is_some() {
                    return Err("a `silent` rule takes no field, threshold or clearAt".into());
                }
                if for_ms < 1_000 {
                    return Err("for: a `silent` rule needs a duration of at least 1s".into());
                }
                (None, None, None)
            }
            condition => {
                let field =
                    self.field.filter(|f| !f.trim().is_empty()).ok_or("field: which telemetry field to watch")?;
                let threshold = self.threshold.filter(|t| t.is_finite()).ok_or("threshold: a number is required")?;
                let clear_at = self.clear_at.unwrap_or(threshold);
                let wrong_side = match condition {
                    Condition::Above => clear_at > threshold,
                    _ => clear_at < threshold,
                };
                if !clear_at.is_finite() || wrong_side {
                    let side = if condition == Condition::Above { "at or below" } else { "at or above" };
                    return Err(format!("clearAt: must be {side} the threshold ({threshold})"));
                }
                (Some(field), Some(threshold), Some(clear_at))
            }
        };
        Ok(Rule {
            id,
            name,
            devices,
            field,
            condition: self.condition,
            threshold,
            clear_at,
            for_ms,
            severity: self.severity,
            enabled: self.enabled,
            created_at,
        })
    }
}

impl Rule {
    pub fn watches(&self, device_id: &str) -> bool {
        match self.devices.strip_suffix('*') {
            Some(prefix) => device_id.starts_with(prefix),
            None => self.devices == device_id,
        }
    }

    fn breached(&self, value: f64) -> bool {
        match (self.condition, self.threshold) {
            (Condition::Above, Some(t)) => value > t,
            (Condition::Below, Some(t)) => value < t,
            _ => false,
        }
    }

    fn recovered(&self, value: f64) -> bool {
        match (self.condition, self.clear_at) {
            (Condition::Above, Some(c)) => value < c,
            (Condition::Below, Some(c)) => value > c,
            _ => false,
        }
    }
}

/// One rule's memory of one device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracker {
    /// Since when the condition has held without an alert yet.
    pub pending_since: Option<i64>,
    pub last_value: Option<f64>,
    pub last_seen: Option<i64>,
    pub active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Raise { value: Option<f64> },
    Clear { value: Option<f64> },
}

/// A reading arrived at `now`; `value` is the rule's field in it (`None` if absent).
pub fn on_reading(rule: &Rule, tracker: &mut Tracker, now: i64, value: Option<f64>) -> Option<Decision> {
    tracker.last_seen = Some(now);
    if rule.condition == Condition::Silent {
        tracker.pending_since = None;
        return std::mem::take(&mut tracker.active).then_some(Decision::Clear { value: None });
    }
    let value = value?;
    tracker.last_value = Some(value);
    if tracker.active {
        if rule.recovered(value) {
            tracker.active = false;
            return Some(Decision::Clear { value: Some(value) });
        }
        return None;
    }
    if !rule.breached(value) {
        tracker.pending_since = None;
        return None;
    }
    let since = *tracker.pending_since.get_or_insert(now);
    raise_if_held(rule, tracker, now, since)
}

/// Time passed: a held condition may now have lasted long enough, or a device gone silent.
pub fn on_tick(rule: &Rule, tracker: &mut Tracker, now: i64) -> Option<Decision> {
    if tracker.active {
        return None;
    }
    match rule.condition {
        Condition::Silent => {
            let last = tracker.last_seen?;
            raise_if_held(rule, tracker, now, last)
        }
        _ => {
            let since = tracker.pending_since?;
            if !tracker.last_value.is_some_and(|v| rule.breached(v)) {
                return None;
            }
            raise_if_held(rule, tracker, now, since)
        }
    }
}

fn raise_if_held(rule: &Rule, tracker: &mut Tracker, now: i64, since: i64) -> Option<Decision> {
    if now - since < rule.for_ms {
        return None;
    }
    tracker.active = true;
    tracker.pending_since = None;
    Some(Decision::Raise { value: tracker.last_value.filter(|_| rule.condition != Condition::Silent) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(value: serde_json::Value) -> Rule {
        serde_json::from_value::<RuleRequest>(value).unwrap().into_rule(1, 0).unwrap()
    }

    fn hot() -> Rule {
        rule(
            json!({"name": "hot", "field": "temperature", "condition": "above", "threshold": 30, "clearAt": 29, "for": "5m"}),
        )
    }

    const MIN: i64 = 60_000;

    /// (time, value or None for a tick) → what happens.
    fn replay(rule: &Rule, steps: &[(i64, Option<f64>)]) -> Vec<(i64, Option<Decision>)> {
        let mut tracker = Tracker::default();
        steps
            .iter()
            .map(|&(at, value)| {
                let decision = match value {
                    Some(v) => on_reading(rule, &mut tracker, at, Some(v)),
                    None => on_tick(rule, &mut tracker, at),
                };
                (at, decision)
            })
            .collect()
    }

    #[test]
    fn a_threshold_must_hold_for_its_duration_and_clears_past_the_hysteresis() {
        let raise = |v| Some(Decision::Raise { value: Some(v) });
        let clear = |v| Some(Decision::Clear { value: Some(v) });
        type Case<'a> = (&'a str, &'a [(i64, Option<f64>)], &'a [Option<Decision>]);
        let cases: &[Case] = &[
            ("too short", &[(0, Some(31.0)), (4 * MIN, Some(31.0)), (4 * MIN + 1, Some(29.5))], &[None, None, None]),
            ("held five minutes", &[(0, Some(31.0)), (5 * MIN, Some(31.5))], &[None, raise(31.5)]),
            ("raised by the clock", &[(0, Some(31.0)), (5 * MIN, None)], &[None, raise(31.0)]),
            (
                "a dip restarts the wait",
                &[(0, Some(31.0)), (3 * MIN, Some(30.0)), (5 * MIN, Some(31.0)), (9 * MIN, None), (10 * MIN, None)],
                &[None, None, None, None, raise(31.0)],
            ),
            (
                "inside the band it stays raised",
                &[
                    (0, Some(31.0)),
                    (5 * MIN, Some(31.0)),
                    (6 * MIN, Some(29.5)),
                    (7 * MIN, Some(30.5)),
                    (8 * MIN, Some(28.9)),
                ],
                &[None, raise(31.0), None, None, clear(28.9)],
            ),
            (
                "raised once only",
                &[(0, Some(31.0)), (5 * MIN, Some(31.0)), (6 * MIN, Some(32.0)), (7 * MIN, None)],
                &[None, raise(31.0), None, None],
            ),
        ];
        for (name, steps, expected) in cases {
            let got: Vec<Option<Decision>> = replay(&hot(), steps).into_iter().map(|(_, d)| d).collect();
            assert_eq!(&got, expected, "{name}");
        }
    }

    #[test]
    fn below_rules_mirror_above_rules() {
        let battery = rule(
            json!({"name": "battery", "field": "voltage", "condition": "below", "threshold": 2.5, "clearAt": 2.6}),
        );
        let got: Vec<_> = replay(&battery, &[(0, Some(2.7)), (1, Some(2.4)), (2, Some(2.55)), (3, Some(2.61))])
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        assert_eq!(
            got,
            [None, Some(Decision::Raise { value: Some(2.4) }), None, Some(Decision::Clear { value: Some(2.61) })]
        );
    }

    #[test]
    fn silence_is_raised_by_the_clock_and_cleared_by_the_next_reading() {
        let silent = rule(json!({"name": "quiet", "condition": "silent", "for": "10m"}));
        let mut tracker = Tracker::default();
        assert_eq!(on_tick(&silent, &mut tracker, 100 * MIN), None, "never seen: nothing to miss");
        assert_eq!(on_reading(&silent, &mut tracker, 0, None), None);
        assert_eq!(on_tick(&silent, &mut tracker, 9 * MIN), None);
        assert_eq!(on_tick(&silent, &mut tracker, 10 * MIN), Some(Decision::Raise { value: None }));
        assert_eq!(on_tick(&silent, &mut tracker, 11 * MIN), None, "raised once");
        assert_eq!(on_reading(&silent, &mut tracker, 12 * MIN, Some(1.0)), Some(Decision::Clear { value: None }));
    }

    #[test]
    fn device_patterns() {
        let cases = [
            ("*", "anything", true),
            ("ruuvi-*", "ruuvi-aabb", true),
            ("ruuvi-*", "esp32", false),
            ("esp32", "esp32", true),
            ("esp32", "esp32-2", false),
        ];
        for (devices, id, expected) in cases {
            let r = Rule { devices: devices.into(), ..hot() };
            assert_eq!(r.watches(id), expected, "{devices} ~ {id}");
        }
    }

    #[test]
    fn bad_rules_are_refused_with_the_field_named() {
        let cases = [
            (json!({"name": "", "field": "t", "condition": "above", "threshold": 1}), "name"),
            (json!({"name": "x", "condition": "above", "threshold": 1}), "field"),
            (json!({"name": "x", "field": "t", "condition": "above"}), "threshold"),
            (json!({"name": "x", "field": "t", "condition": "above", "threshold": 30, "clearAt": 31}), "clearAt"),
            (json!({"name": "x", "field": "t", "condition": "below", "threshold": 2.5, "clearAt": 2.4}), "clearAt"),
            (json!({"name": "x", "condition": "silent"}), "for"),
            (json!({"name": "x", "condition": "silent", "for": "1m", "field": "t"}), "silent"),
            (json!({"name": "x", "field": "t", "condition": "above", "threshold": 1, "severity": "bad"}), "severity"),
            (json!({"name": "x", "field": "t", "condition": "above", "threshold": 1, "devices": "a*b"}), "devices"),
        ];
        for (request, mentions) in cases {
            let error = serde_json::from_value::<RuleRequest>(request.clone()).unwrap().into_rule(1, 0).unwrap_err();
            assert!(error.contains(mentions), "{request} → {error}");
        }
    }
}
