//! Load forecasting (DESIGN §6: plan for the load expected when a replica started now would be
//! ready). Per model, additive Holt–Winters on the observed arrival rate: a level, a damped
//! trend and a daily seasonal profile, updated at each observation whatever the time between
//! them, with a prediction interval from the one-step errors. Pure: the caller passes the time.
//!
//! The seasonal profile is learned against a slow baseline (the load's mean over a period), not
//! against the fast level: a level and trend quick enough to follow a ramp within minutes would
//! otherwise absorb each day's pattern before the profile could learn it. Level and trend then
//! smooth the deseasonalized load.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How the forecaster smooths, as time constants (independent of the cycle interval).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastSettings {
    /// Plan for forecasts at all; off: plan for the load observed now.
    pub enabled: bool,
    /// The upper quantile of the forecast the plan sizes for (0.5 = the expected load).
    pub quantile: f64,
    /// How fast the level follows the observations, seconds.
    pub level_time_constant_s: f64,
    /// How fast the trend follows the level's slope, seconds.
    pub trend_time_constant_s: f64,
    /// A trend is extrapolated over about this long at most (damped trend), seconds.
    pub trend_horizon_s: f64,
    /// Length of the seasonal cycle, seconds (a day).
    pub season_period_s: f64,
    /// Bins of the seasonal cycle (96: quarter hours of a day).
    pub season_bins: u32,
    /// Weight of one full visit of a bin in updating its seasonal offset (0: no seasonality).
    pub season_weight: f64,
    /// How fast the error variance follows the one-step errors, seconds.
    pub error_time_constant_s: f64,
}

impl Default for ForecastSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: 0.9,
            level_time_constant_s: 90.0,
            trend_time_constant_s: 180.0,
            trend_horizon_s: 300.0,
            season_period_s: 86_400.0,
            season_bins: 96,
            season_weight: 0.3,
            error_time_constant_s: 300.0,
        }
    }
}

impl ForecastSettings {
    /// Problems with the settings, as `field: what is wrong`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(self.quantile.is_finite() && (0.5..=0.999).contains(&self.quantile)) {
            out.push(format!("quantile: must be a number ≥ 0.5 and ≤ 0.999, got {}", self.quantile));
        }
        for (name, v) in [
            ("level_time_constant_s", self.level_time_constant_s),
            ("trend_time_constant_s", self.trend_time_constant_s),
            ("trend_horizon_s", self.trend_horizon_s),
            ("season_period_s", self.season_period_s),
            ("error_time_constant_s", self.error_time_constant_s),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 1e8) {
                out.push(format!("{name}: must be a number > 0 and ≤ 100000000, got {v}"));
            }
        }
        if !(1..=10_000).contains(&self.season_bins) {
            out.push(format!("season_bins: must be ≥ 1 and ≤ 10000, got {}", self.season_bins));
        }
        if !(self.season_weight.is_finite() && (0.0..=1.0).contains(&self.season_weight)) {
            out.push(format!("season_weight: must be a number ≥ 0 and ≤ 1, got {}", self.season_weight));
        }
        out
    }
}

/// The forecast of one model's load at one horizon.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Forecast {
    /// The load observed now, req/s (all classes).
    pub observed_rps: f64,
    /// Expected load at `at_s`.
    pub expected_rps: f64,
    /// The prediction interval at the planning quantile (symmetric: lower is its complement).
    pub lower_rps: f64,
    pub upper_rps: f64,
    /// Seconds ahead the forecast looks: the model's start-up time plus the time to the next
    /// decision and the metrics' age.
    pub horizon_s: f64,
    /// What the plan sizes for: the upper bound, never below the load observed now, and at least
    /// what a declared schedule expects.
    pub planned_rps: f64,
}

/// One model's smoothed state.
#[derive(Clone, Debug, PartialEq)]
struct Series {
    t_s: f64,
    /// The load's mean over about one seasonal period.
    baseline: f64,
    /// Level of the deseasonalized load.
    level: f64,
    /// req/s per second.
    trend: f64,
    season: Vec<f64>,
    /// Mean squared one-step error relative to the load (noise grows with the load; a model at
    /// rest has none).
    error_var: f64,
    /// Mean time between observations, seconds (for the interval's growth with the horizon).
    step_s: f64,
    observations: u64,
}

/// Per-model forecasters, by model name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Forecaster {
    series: BTreeMap<String, Series>,
}

/// The standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    const A: [f64; 6] = [
        -39.696_830_286_653_76,
        220.946_098_424_520_5,
        -275.928_510_446_968_7,
        138.357_751_867_269,
        -30.664_798_066_147_16,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -54.476_098_798_224_06,
        161.585_836_858_040_9,
        -155.698_979_859_886_6,
        66.801_311_887_719_72,
        -13.280_681_552_885_72,
    ];
    const C: [f64; 6] = [
        -0.007_784_894_002_430_293,
        -0.322_396_458_041_136_4,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [0.007_784_695_709_041_462, 0.322_467_129_070_039_8, 2.445_134_137_142_996, 3.754_408_661_907_416];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.024_25 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.024_25 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

impl Forecaster {
    /// Fold one observation of `model`'s load (`rps` at `t_s`) into its state. Observations at
    /// or before the last one are ignored (a repeated cycle on the same data teaches nothing).
    pub fn observe(&mut self, model: &str, t_s: f64, rps: f64, settings: &ForecastSettings) {
        if !(t_s.is_finite() && rps.is_finite() && rps >= 0.0) {
            return;
        }
        let bins = settings.season_bins.max(1) as usize;
        let Some(s) = self.series.get_mut(model) else {
            self.series.insert(
                model.to_string(),
                Series {
                    t_s,
                    baseline: rps,
                    level: rps,
                    trend: 0.0,
                    season: vec![0.0; bins],
                    // No error seen yet: the first plans are for the load observed.
                    error_var: 0.0,
                    step_s: 30.0,
                    observations: 1,
                },
            );
            return;
        };
        if s.season.len() != bins {
            s.season = vec![0.0; bins];
        }
        let dt = t_s - s.t_s;
        if dt <= 0.0 {
            return;
        }
        let weight = |tau: f64| 1.0 - (-dt / tau).exp();
        let bin = season_bin(t_s, settings.season_period_s, bins);
        let predicted = s.level + s.trend * dt + s.season[bin];
        let error = rps - predicted;
        let a = weight(settings.level_time_constant_s);
        let b = weight(settings.trend_time_constant_s);
        let level = s.level + s.trend * dt + a * (rps - s.season[bin] - s.level - s.trend * dt);
        s.trend += b * ((level - s.level) / dt - s.trend);
        s.level = level;
        s.baseline += weight(settings.season_period_s) * (rps - s.baseline);
        // A bin is visited for period/bins seconds a cycle; each observation carries its share.
        let bin_s = settings.season_period_s / bins as f64;
        let g = (settings.season_weight * dt / bin_s).min(1.0);
        s.season[bin] += g * (rps - s.baseline - s.season[bin]);
        // Relative, and clipped: one step change (a burst, a silence) is not lasting noise.
        let relative = (error / predicted.max(rps).max(0.05)).clamp(-0.5, 0.5);
        s.error_var += weight(settings.error_time_constant_s) * (relative * relative - s.error_var);
        s.step_s += 0.2 * (dt - s.step_s);
        s.t_s = t_s;
        s.observations += 1;
    }

    /// The forecast of `model`'s load `horizon_s` after its last observation, at the planning
    /// quantile; `None` before its first observation.
    pub fn forecast(&self, model: &str, horizon_s: f64, settings: &ForecastSettings) -> Option<Forecast> {
        let s = self.series.get(model)?;
        let h = horizon_s.max(0.0);
        let bins = s.season.len();
        let now_bin = season_bin(s.t_s, settings.season_period_s, bins);
        let then_bin = season_bin(s.t_s + h, settings.season_period_s, bins);
        // Damped trend: the slope is followed for about `trend_horizon_s`, then flattens.
        let tau = settings.trend_horizon_s;
        let trend = s.trend * tau * (1.0 - (-h / tau).exp());
        let observed = (s.level + s.season[now_bin]).max(0.0);
        let expected = (s.level + trend + s.season[then_bin]).max(0.0);
        // ETS(A,A,N)'s h-step variance, in steps of the observation interval.
        let step = s.step_s.max(1.0);
        let (alpha, beta) = (
            1.0 - (-step / settings.level_time_constant_s).exp(),
            1.0 - (-step / settings.trend_time_constant_s).exp(),
        );
        let k = (h / step).max(1.0);
        let growth = 1.0 + (k - 1.0) * (alpha * alpha + alpha * beta * k + beta * beta * k * (2.0 * k - 1.0) / 6.0);
        let sigma = expected * (s.error_var * growth).sqrt();
        let z = normal_quantile(settings.quantile);
        Some(Forecast {
            observed_rps: observed,
            expected_rps: expected,
            lower_rps: (expected - z * sigma).max(0.0),
            upper_rps: expected + z * sigma,
            horizon_s: h,
            planned_rps: (expected + z * sigma).max(observed),
        })
    }

    /// Forget models that are no longer planned.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.series.retain(|m, _| keep(m));
    }
}

fn season_bin(t_s: f64, period_s: f64, bins: usize) -> usize {
    let phase = t_s.rem_euclid(period_s) / period_s;
    ((phase * bins as f64) as usize).min(bins.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(f: &mut Forecaster, settings: &ForecastSettings, from: f64, to: f64, rps: impl Fn(f64) -> f64) {
        let mut t = from;
        while t <= to {
            f.observe("m", t, rps(t), settings);
            t += 30.0;
        }
    }

    #[test]
    fn the_normal_quantile_matches_tables() {
        for (p, z) in [(0.5, 0.0), (0.9, 1.281_551_6), (0.95, 1.644_853_6), (0.99, 2.326_347_9), (0.1, -1.281_551_6)] {
            assert!((normal_quantile(p) - z).abs() < 1e-6, "{p}: {}", normal_quantile(p));
        }
    }

    #[test]
    fn a_steady_load_is_forecast_flat_with_a_narrow_interval() {
        let settings = ForecastSettings::default();
        let mut f = Forecaster::default();
        feed(&mut f, &settings, 0.0, 3600.0, |_| 10.0);
        let fc = f.forecast("m", 150.0, &settings).expect("observed");
        assert!((fc.expected_rps - 10.0).abs() < 0.01, "{fc:?}");
        assert!(fc.upper_rps - fc.expected_rps < 0.2, "{fc:?}");
        assert!(fc.planned_rps >= 10.0);
    }

    #[test]
    fn a_ramp_is_extrapolated_to_the_horizon() {
        let settings = ForecastSettings::default();
        let mut f = Forecaster::default();
        // +1 req/s per minute.
        feed(&mut f, &settings, 0.0, 1200.0, |t| 5.0 + t / 60.0);
        let fc = f.forecast("m", 150.0, &settings).expect("observed");
        let now = 5.0 + 1200.0 / 60.0;
        // The damped trend covers most of the 2.5 rps the ramp adds in 150 s.
        assert!(fc.expected_rps > now + 1.5, "{fc:?}");
        assert!(fc.expected_rps < now + 3.0, "{fc:?}");
        assert!(fc.planned_rps >= fc.expected_rps);
    }

    #[test]
    fn noise_widens_the_interval_and_the_plan_covers_its_upper_quantile() {
        let settings = ForecastSettings::default();
        let mut f = Forecaster::default();
        // ±2 req/s alternating around 10.
        feed(&mut f, &settings, 0.0, 3600.0, |t| if ((t / 30.0) as u64).is_multiple_of(2) { 8.0 } else { 12.0 });
        let fc = f.forecast("m", 150.0, &settings).expect("observed");
        assert!(fc.upper_rps - fc.expected_rps > 1.5, "{fc:?}");
        assert!(fc.lower_rps < fc.expected_rps);
        let wider = f.forecast("m", 1500.0, &settings).expect("observed");
        assert!(wider.upper_rps - wider.expected_rps > fc.upper_rps - fc.expected_rps);
    }

    #[test]
    fn a_daily_pattern_is_learned_and_anticipated() {
        let settings = ForecastSettings { level_time_constant_s: 3600.0, ..ForecastSettings::default() };
        let day = 86_400.0;
        // Quiet nights, busy afternoons: 2 req/s, 20 req/s from 12:00 to 18:00.
        let load = |t: f64| if (12.0 * 3600.0..18.0 * 3600.0).contains(&t.rem_euclid(day)) { 20.0 } else { 2.0 };
        let mut f = Forecaster::default();
        feed(&mut f, &settings, 0.0, 5.0 * day + 11.0 * 3600.0, load);
        // At 11:00, the forecast for 12:30 expects the afternoon.
        let fc = f.forecast("m", 5400.0, &settings).expect("observed");
        assert!(fc.expected_rps > 10.0, "{fc:?}");
        let mut flat = Forecaster::default();
        let no_season = ForecastSettings { season_weight: 0.0, ..settings.clone() };
        feed(&mut flat, &no_season, 0.0, 5.0 * day + 11.0 * 3600.0, load);
        assert!(flat.forecast("m", 5400.0, &no_season).expect("observed").expected_rps < 5.0);
    }

    #[test]
    fn equal_inputs_give_equal_forecasts_and_bad_numbers_are_ignored() {
        let settings = ForecastSettings::default();
        let run = || {
            let mut f = Forecaster::default();
            feed(&mut f, &settings, 0.0, 600.0, |t| 3.0 + (t / 100.0).sin());
            f.observe("m", 630.0, f64::NAN, &settings);
            f.observe("m", 590.0, 100.0, &settings);
            f.forecast("m", 120.0, &settings)
        };
        assert_eq!(run(), run());
        assert!(run().expect("observed").expected_rps < 10.0);
        assert!(
            ForecastSettings { quantile: 2.0, ..ForecastSettings::default() }.problems()[0].starts_with("quantile")
        );
    }
}
