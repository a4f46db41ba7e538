//! Values derived from a measurement, with the formulas RuuviCollector and RuuviBridge use
//! (shared/reference/ruuvi.md §6) and Ruuvi's Indoor Air Quality Score for Ruuvi Air.
//! Apply calibration offsets before calling [`add_derived_values`].

use super::{formats::round, Field, Measurement};

/// Fills every derived field whose inputs the data format carries. A derived value is
/// `Unavailable` when one of its inputs is.
pub fn add_derived_values(m: &mut Measurement) {
    let t = m.temperature;
    let rh = m.humidity;

    if !m.accel_x.is_absent() {
        let axes = (m.accel_x.value(), m.accel_y.value(), m.accel_z.value());
        let (total, angles) = match axes {
            (Some(x), Some(y), Some(z)) => {
                let total = (x * x + y * y + z * z).sqrt();
                let angle = |a: f64| {
                    if total == 0.0 {
                        Field::Unavailable
                    } else {
                        Field::Value(round((a / total).clamp(-1.0, 1.0).acos().to_degrees(), 2))
                    }
                };
                (Field::Value(round(total, 3)), [angle(x), angle(y), angle(z)])
            }
            _ => (Field::Unavailable, [Field::Unavailable; 3]),
        };
        m.acceleration_total = total;
        [m.acceleration_angle_from_x, m.acceleration_angle_from_y, m.acceleration_angle_from_z] = angles;
    }

    if !t.is_absent() && !rh.is_absent() {
        let evp = t.map(equilibrium_vapor_pressure);
        m.equilibrium_vapor_pressure = evp.map(|p| round(p, 3));
        m.absolute_humidity = both(t, rh, |t, rh| round(absolute_humidity(t, rh), 3));
        m.dew_point = match (t.value(), rh.value()) {
            (Some(t), Some(rh)) if rh > 0.0 => Field::Value(round(dew_point(t, rh), 3)),
            _ => Field::Unavailable,
        };
        if !m.pressure.is_absent() {
            m.air_density = match (t.value(), rh.value(), m.pressure.value()) {
                (Some(t), Some(rh), Some(p)) => Field::Value(round(air_density(t, rh, p), 4)),
                _ => Field::Unavailable,
            };
        }
    }

    if !m.pm2_5.is_absent() && !m.co2.is_absent() {
        let score = both(m.pm2_5, m.co2, iaqs);
        m.iaqs = score.map(f64::round);
        m.iaqs_rating = score.map(|s| iaqs_rating(s).to_string());
    }
}

fn both(a: Field<f64>, b: Field<f64>, f: impl FnOnce(f64, f64) -> f64) -> Field<f64> {
    match (a.value(), b.value()) {
        (Some(a), Some(b)) => Field::Value(f(a, b)),
        _ => Field::Unavailable,
    }
}

/// Saturation vapour pressure over water in Pa (Magnus formula).
fn equilibrium_vapor_pressure(t: f64) -> f64 {
    611.2 * (17.67 * t / (243.5 + t)).exp()
}

/// Grams of water per m³ of air.
fn absolute_humidity(t: f64, rh: f64) -> f64 {
    equilibrium_vapor_pressure(t) * rh * 0.021674 / (273.15 + t)
}

/// Dew point in °C; undefined at 0 %RH.
fn dew_point(t: f64, rh: f64) -> f64 {
    let v = (rh / 100.0 * equilibrium_vapor_pressure(t) / 611.2).ln();
    -243.5 * v / (v - 17.67)
}

/// Density of moist air in kg/m³.
fn air_density(t: f64, rh: f64, pressure_pa: f64) -> f64 {
    1.2929 * 273.15 / (t + 273.15) * (pressure_pa - 0.3783 * rh / 100.0 * equilibrium_vapor_pressure(t)) / 101_300.0
}

/// Ruuvi Indoor Air Quality Score, 0 (worst) to 100 (best), from PM2.5 and CO₂.
fn iaqs(pm2_5: f64, co2: f64) -> f64 {
    let pm = pm2_5.clamp(0.0, 60.0);
    let co2 = co2.clamp(420.0, 2300.0);
    let dx = pm * 100.0 / 60.0;
    let dy = (co2 - 420.0) * 100.0 / 1880.0;
    (100.0 - dx.hypot(dy)).clamp(0.0, 100.0)
}

/// The grade Ruuvi shows for an IAQS value, graded on the value rounded to an integer.
pub fn iaqs_rating(score: f64) -> &'static str {
    match score.round() {
        s if s >= 90.0 => "excellent",
        s if s >= 80.0 => "good",
        s if s >= 50.0 => "fair",
        s if s >= 10.0 => "poor",
        _ => "very poor",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn formulas_match_reference_points() {
        // Reference points computed by hand from the published formulas.
        assert!(close(equilibrium_vapor_pressure(0.0), 611.2, 1e-9));
        assert!(close(equilibrium_vapor_pressure(20.0), 2_336.95, 0.01));
        // At 100 %RH the dew point equals the temperature.
        for t in [-10.0, 0.0, 21.5, 35.0] {
            assert!(close(dew_point(t, 100.0), t, 1e-9), "{t}");
        }
        assert!(close(dew_point(20.0, 50.0), 9.26, 0.05));
        assert!(close(absolute_humidity(20.0, 50.0), 8.65, 0.05));
        // Dry air at 0 °C and 101300 Pa has the reference density.
        assert!(close(air_density(0.0, 0.0, 101_300.0), 1.2929, 1e-9));
    }

    #[test]
    fn iaqs_table() {
        let cases = [
            // (pm2.5, co2, expected score, rating)
            (0.0, 420.0, 100.0, "excellent"),
            (0.0, 300.0, 100.0, "excellent"), // CO₂ below outdoor level clamps to 420
            (60.0, 420.0, 0.0, "very poor"),
            (6.0, 420.0, 90.0, "excellent"),
            (0.0, 2300.0, 0.0, "very poor"),
            (500.0, 5000.0, 0.0, "very poor"),
            (12.0, 608.0, 100.0 - (20f64).hypot(10.0), "fair"),
            (3.0, 420.0, 95.0, "excellent"),
            (12.0, 420.0, 80.0, "good"),
        ];
        for (pm, co2, score, rating) in cases {
            let got = iaqs(pm, co2);
            assert!(close(got, score, 1e-9), "pm {pm} co2 {co2}: {got}");
            assert_eq!(iaqs_rating(got), rating, "pm {pm} co2 {co2}");
        }
        assert_eq!(iaqs_rating(89.5), "excellent"); // graded on the rounded value
        assert_eq!(iaqs_rating(9.4), "very poor");
    }

    #[test]
    fn derived_values_follow_input_availability() {
        let mut m = Measurement {
            data_format: 5,
            temperature: Field::Value(20.0),
            humidity: Field::Unavailable,
            pressure: Field::Value(100_000.0),
            accel_x: Field::Value(0.0),
            accel_y: Field::Value(0.0),
            accel_z: Field::Value(0.0),
            ..Measurement::default()
        };
        add_derived_values(&mut m);
        assert_eq!(m.dew_point, Field::Unavailable);
        assert_eq!(m.air_density, Field::Unavailable);
        assert_eq!(m.acceleration_total, Field::Value(0.0));
        assert_eq!(m.acceleration_angle_from_x, Field::Unavailable);
        assert!(m.iaqs.is_absent(), "a RuuviTag has no air-quality inputs");
    }
}
