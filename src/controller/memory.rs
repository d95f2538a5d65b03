//! What the loop carries from one cycle to the next besides the previous decision — the
//! stabilizer's history, the calibration, the forecasters, the learned start-up times and each
//! model's activity — and the settings that steer them ([`Controls`]). A decision is a pure
//! function of the observation, the previous decision and this memory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::calibrate::{Calibration, CalibrationSettings};
use super::forecast::{ForecastSettings, Forecaster};
use super::schedule::Schedule;
use super::stabilize::{Behavior, Stabilizer};

/// The loop's settings beyond HPA's behavior (`controls` in `allot-config`, `--controls` of
/// `allot simulate`). Every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Controls {
    pub calibration: CalibrationSettings,
    pub forecast: ForecastSettings,
    pub startup: StartupSettings,
    pub panic: PanicSettings,
    pub scale_to_zero: ScaleToZeroSettings,
    /// Declared windows of expected load or minimum replicas per model.
    pub schedules: Vec<Schedule>,
    /// Seconds between cycles (the loop sets it; the forecast looks this much further ahead,
    /// to when the next decision can correct this one).
    #[serde(skip)]
    pub interval_s: f64,
}

impl Default for Controls {
    fn default() -> Self {
        Self {
            calibration: CalibrationSettings::default(),
            forecast: ForecastSettings::default(),
            startup: StartupSettings::default(),
            panic: PanicSettings::default(),
            scale_to_zero: ScaleToZeroSettings::default(),
            schedules: Vec::new(),
            interval_s: 30.0,
        }
    }
}

impl Controls {
    /// Every problem with the settings, as `field: what is wrong`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.calibration.problems().into_iter().map(|p| format!("calibration.{p}")));
        out.extend(self.forecast.problems().into_iter().map(|p| format!("forecast.{p}")));
        let mut check = |name: &str, v: f64, lo: f64, hi: f64| {
            if !(v.is_finite() && v >= lo && v <= hi) {
                out.push(format!("{name}: must be a number ≥ {lo} and ≤ {hi}, got {v}"));
            }
        };
        check("startup.prior_s", self.startup.prior_s, 0.0, 86_400.0);
        check("startup.weight", self.startup.weight, 0.0, 1.0);
        check("panic.factor", self.panic.factor, 1.0, 100.0);
        check("panic.hold_s", self.panic.hold_s, 0.0, 86_400.0);
        check("scale_to_zero.idle_s", self.scale_to_zero.idle_s, 0.0, 30.0 * 86_400.0);
        out
    }
}

/// Learning each variant's start-up time from its replicas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StartupSettings {
    /// Start-up time assumed before any replica was seen starting, where the variant declares
    /// none (`spec.startupSeconds`), seconds.
    pub prior_s: f64,
    /// Weight of each new observation once a few were seen (exponential smoothing).
    pub weight: f64,
}

impl Default for StartupSettings {
    fn default() -> Self {
        Self { prior_s: 120.0, weight: 0.2 }
    }
}

/// Panic mode (Kthena's sense, peers.md §1.4): observed latency far over the SLO acts at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PanicSettings {
    pub enabled: bool,
    /// Enter panic when a model's observed statistic exceeds its target by this factor.
    pub factor: f64,
    /// Stay in panic this long after the last breach, seconds.
    pub hold_s: f64,
}

impl Default for PanicSettings {
    fn default() -> Self {
        Self { enabled: true, factor: 2.0, hold_s: 60.0 }
    }
}

/// Scale to zero: models whose variants all allow 0 replicas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleToZeroSettings {
    /// A model keeps one replica until it has seen no request (arriving, queued or running) for
    /// this long, seconds (KEDA's `cooldownPeriod`).
    pub idle_s: f64,
}

impl Default for ScaleToZeroSettings {
    fn default() -> Self {
        Self { idle_s: 300.0 }
    }
}

/// Learned start-up time of one variant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Startup {
    pub seconds: f64,
    /// Replicas seen starting.
    pub observed: u64,
}

/// The loop state a decision reads and updates.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    pub stabilizer: Stabilizer,
    pub calibration: Calibration,
    pub forecaster: Forecaster,
    /// Per variant name.
    pub startup: BTreeMap<String, Startup>,
    /// Per model name: when it last had a request arriving, queued or running.
    pub last_active_s: BTreeMap<String, f64>,
    /// Per model name: panic mode holds until then, with why it started.
    pub panic_until_s: BTreeMap<String, (f64, String)>,
    pub controls: Controls,
}

impl Memory {
    pub fn new(behavior: Behavior) -> Self {
        Self { stabilizer: Stabilizer::new(behavior), ..Self::default() }
    }

    pub fn with_controls(mut self, controls: Controls) -> Self {
        self.controls = controls;
        self
    }

    /// Only the stabilizer: plans for the load observed now, no calibration, no forecast, no
    /// panic (what a dry run of one snapshot needs).
    pub fn reactive(behavior: Behavior) -> Self {
        let mut controls = Controls::default();
        controls.calibration.enabled = false;
        controls.forecast.enabled = false;
        controls.panic.enabled = false;
        Self::new(behavior).with_controls(controls)
    }

    /// The start-up time to expect of `variant`: learned, else declared, else the prior.
    pub fn startup_s(&self, variant: &str, declared_s: Option<f64>) -> f64 {
        self.startup.get(variant).map_or_else(|| declared_s.unwrap_or(self.controls.startup.prior_s), |s| s.seconds)
    }

    /// Fold observed start-ups of `variant` into its estimate (the declared or prior value
    /// counts as two observations).
    pub fn learn_startup(&mut self, variant: &str, declared_s: Option<f64>, observed_s: &[f64]) {
        let prior = declared_s.unwrap_or(self.controls.startup.prior_s);
        let weight = self.controls.startup.weight;
        let entry = self.startup.entry(variant.to_string()).or_insert(Startup { seconds: prior, observed: 0 });
        for &s in observed_s.iter().filter(|s| s.is_finite() && **s >= 0.0) {
            entry.observed += 1;
            let w = (1.0 / (entry.observed as f64 + 2.0)).max(weight);
            entry.seconds += w * (s - entry.seconds);
        }
    }
}

impl From<Stabilizer> for Memory {
    fn from(stabilizer: Stabilizer) -> Self {
        Self { stabilizer, ..Self::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_time_moves_from_its_prior_to_what_replicas_show() {
        let mut m = Memory::default();
        assert_eq!(m.startup_s("v", None), 120.0);
        assert_eq!(m.startup_s("v", Some(300.0)), 300.0);
        m.learn_startup("v", Some(300.0), &[60.0]);
        // The declared 300 s counts as two observations: (2·300 + 60) / 3.
        assert!((m.startup_s("v", Some(300.0)) - 220.0).abs() < 1e-9);
        for _ in 0..40 {
            m.learn_startup("v", Some(300.0), &[60.0, f64::NAN]);
        }
        assert!((m.startup_s("v", Some(300.0)) - 60.0).abs() < 1.0);
    }

    #[test]
    fn controls_read_from_yaml_with_defaults_and_checked_bounds() {
        let text = "forecast: { quantile: 0.95 }\npanic: { factor: 3 }\nschedules:\n  - { model: chat, start: '0 8 * * 1-5', end: '0 18 * * 1-5', min_replicas: 2 }\n";
        let c: Controls = serde_saphyr::from_str(text).expect("parses");
        assert_eq!(c.forecast.quantile, 0.95);
        assert_eq!(c.panic.factor, 3.0);
        assert_eq!(c.schedules.len(), 1);
        assert!(c.calibration.enabled && c.problems().is_empty());
        let bad: Controls =
            serde_saphyr::from_str("panic: { factor: 0.5 }\nforecast: { quantile: 1.5 }\n").expect("parses");
        let problems = bad.problems();
        assert!(problems.iter().any(|p| p.starts_with("panic.factor")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("forecast.quantile")), "{problems:?}");
        assert!(serde_saphyr::from_str::<Controls>("panik: {}\n").is_err());
    }
}
