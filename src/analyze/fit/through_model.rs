//! Fitting a profile through the planner's own prediction path (DESIGN §3 "Fitting"): the
//! parameters minimise the relative error of predicted against measured mean and p90 TTFT and
//! ITL at each measured load, where "predicted" is exactly what [`ReplicaModel`] tells the
//! planner. Levenberg–Marquardt on log-ratio residuals, bounded (every parameter ≥ 0), from
//! starting points a linear regression on the same data gives.

use nalgebra::{DMatrix, DVector};
use serde::Serialize;

use super::measurement::{Load, Measurement};
use crate::analyze::capacity::{Capacity, Slo, capacity_at_slo};
use crate::analyze::engine::EngineLimits;
use crate::analyze::queue::{ReplicaModel, Workload};
use crate::analyze::{ItlPopulation, LatencyParams, Role};

/// The parameters in the order of the fit's vector, with their scale (a typical magnitude, so
/// the search works on numbers near 1) and upper bound.
const PARAMETERS: [(&str, f64, f64); 10] = [
    ("alpha_ms", 10.0, 10_000.0),
    ("beta_ms", 0.05, 1_000.0),
    ("gamma_ms", 1.0, 10_000.0),
    ("delta_ms", 0.02, 100.0),
    ("prefill_quadratic_ms", 1e-6, 1.0),
    ("itl_context_ms", 1e-5, 1.0),
    ("itl_quadratic_ms", 1e-5, 1.0),
    ("ttft_overhead_ms", 5.0, 10_000.0),
    ("scheduling_delay_steps", 1.0, 2.0),
    ("roofline_exponent", 1.0, 8.0),
];

fn to_vector(p: &LatencyParams) -> [f64; 10] {
    p.named().map(|(_, v)| v)
}

fn from_vector(v: &[f64; 10]) -> LatencyParams {
    LatencyParams {
        alpha_ms: v[0],
        beta_ms: v[1],
        gamma_ms: v[2],
        delta_ms: v[3],
        prefill_quadratic_ms: v[4],
        itl_context_ms: v[5],
        itl_quadratic_ms: v[6],
        ttft_overhead_ms: v[7],
        scheduling_delay_steps: v[8],
        roofline_exponent: v[9].max(1.0),
    }
}

/// The statistics a fit compares, per measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    MeanTtft,
    P90Ttft,
    MeanItl,
    P90Itl,
}

impl Stat {
    pub const ALL: [Stat; 4] = [Stat::MeanTtft, Stat::P90Ttft, Stat::MeanItl, Stat::P90Itl];

    pub fn as_str(self) -> &'static str {
        match self {
            Stat::MeanTtft => "mean TTFT",
            Stat::P90Ttft => "p90 TTFT",
            Stat::MeanItl => "mean ITL",
            Stat::P90Itl => "p90 ITL",
        }
    }

    fn measured(self, m: &Measurement) -> Option<f64> {
        match self {
            Stat::MeanTtft => m.ttft.mean_ms,
            Stat::P90Ttft => m.ttft.p90_ms,
            Stat::MeanItl => m.itl_request.mean_ms,
            Stat::P90Itl => m.itl_request.p90_ms,
        }
        .filter(|v| v.is_finite() && *v > 0.0)
    }
}

/// What the model predicts for one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Predicted {
    pub mean_ttft_ms: f64,
    pub p90_ttft_ms: f64,
    pub mean_itl_ms: f64,
    pub p90_itl_ms: f64,
    /// λ / λ* of the prediction (0 for a lone request).
    pub utilization: f64,
    /// The model has no steady state at the measured rate.
    pub saturated: bool,
}

impl Predicted {
    pub fn get(&self, stat: Stat) -> f64 {
        match stat {
            Stat::MeanTtft => self.mean_ttft_ms,
            Stat::P90Ttft => self.p90_ttft_ms,
            Stat::MeanItl => self.mean_itl_ms,
            Stat::P90Itl => self.p90_itl_ms,
        }
    }
}

/// The replica a measurement ran on, under its own workload.
pub fn measured_replica(params: LatencyParams, engine: EngineLimits, m: &Measurement) -> ReplicaModel {
    let workload = Workload::new(m.input, m.output).with_arrival_cv2(m.arrival_cv2());
    ReplicaModel::new(params, engine, Role::Both, workload)
}

/// The model's statistics for one measurement; above saturation, those just below it.
pub fn predict(params: LatencyParams, engine: EngineLimits, m: &Measurement) -> Option<Predicted> {
    let rps = m.predict_rps()?;
    let model = measured_replica(params, engine, m);
    let limit = 0.999 * model.saturation_rps();
    let saturated = rps >= limit;
    let steady = model.steady(rps.min(limit))?;
    Some(Predicted {
        mean_ttft_ms: steady.mean_ttft_ms(),
        p90_ttft_ms: steady.ttft_quantile_ms(0.9),
        mean_itl_ms: steady.mean_itl_ms(ItlPopulation::Request),
        p90_itl_ms: steady.itl_quantile_ms(ItlPopulation::Request, 0.9),
        utilization: steady.utilization(),
        saturated,
    })
}

/// One statistic of one measurement, measured and predicted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PointResidual {
    pub label: String,
    pub mix: String,
    pub stat: Stat,
    pub measured_ms: f64,
    pub predicted_ms: f64,
    /// predicted / measured − 1.
    pub relative_error: f64,
}

/// Every residual of `measurements` under `params`.
pub fn residuals(params: LatencyParams, engine: EngineLimits, measurements: &[&Measurement]) -> Vec<PointResidual> {
    let mut out = Vec::new();
    for m in measurements {
        let Some(p) = predict(params, engine, m) else { continue };
        for stat in Stat::ALL {
            if let Some(measured) = stat.measured(m) {
                let predicted = p.get(stat);
                out.push(PointResidual {
                    label: m.label.clone(),
                    mix: m.mix.clone(),
                    stat,
                    measured_ms: measured,
                    predicted_ms: predicted,
                    relative_error: predicted / measured - 1.0,
                });
            }
        }
    }
    out
}

/// Mean absolute relative error of one statistic over residuals (`None` when there are none).
pub fn mape(residuals: &[PointResidual], stat: Stat) -> Option<f64> {
    let errors: Vec<f64> = residuals.iter().filter(|r| r.stat == stat).map(|r| r.relative_error.abs()).collect();
    (!errors.is_empty()).then(|| errors.iter().sum::<f64>() / errors.len() as f64)
}

/// Which parameters a fit may move (the others stay at their starting values, usually 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FreeParameters {
    /// ε: prefill super-linear in prompt length.
    pub prefill_quadratic: bool,
    /// ζ: ITL super-linear in batch size.
    pub itl_quadratic: bool,
}

impl Default for FreeParameters {
    fn default() -> Self {
        Self { prefill_quadratic: true, itl_quadratic: true }
    }
}

/// The outcome of a fit.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFit {
    pub params: LatencyParams,
    /// Residuals of the measurements used.
    pub residuals: Vec<PointResidual>,
    /// Root mean squared log-ratio.
    pub rms_log_error: f64,
    pub iterations: usize,
}

/// Why a fit through the model was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ModelFitError {
    #[error(
        "{used} usable measurements ({statistics} statistics); at least {needed} runs at 3 or more loads are needed"
    )]
    TooFewPoints { used: usize, statistics: usize, needed: usize },
    #[error("the measurements span one load only ({rps:.3} req/s): nothing to fit how latency grows with load")]
    OneLoad { rps: f64 },
    #[error(
        "the best fit is still off by {mape:.0} % on {stat} (limit {limit:.0} %): the model does not describe this data"
    )]
    Poor { stat: &'static str, mape: f64, limit: f64 },
}

/// Fewest usable runs for a fit.
pub const MIN_RUNS: usize = 4;
/// A fit whose mean absolute error on any statistic exceeds this is refused.
pub const MAX_MAPE: f64 = 0.35;

/// Fit the profile parameters to `measurements` (already screened) through the prediction path.
pub fn fit(
    measurements: &[&Measurement],
    engine: EngineLimits,
    free: FreeParameters,
) -> Result<ModelFit, ModelFitError> {
    let statistics: usize =
        measurements.iter().map(|m| Stat::ALL.iter().filter(|s| s.measured(m).is_some()).count()).sum();
    if measurements.len() < MIN_RUNS || statistics < 2 * PARAMETERS.len() {
        return Err(ModelFitError::TooFewPoints { used: measurements.len(), statistics, needed: MIN_RUNS });
    }
    let rates: Vec<f64> = measurements.iter().filter_map(|m| m.predict_rps()).collect();
    let (lo, hi) = rates.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    if hi - lo <= 1e-9 * hi.max(1e-9) {
        return Err(ModelFitError::OneLoad { rps: hi });
    }
    let mut best: Option<ModelFit> = None;
    for start in starting_points(measurements) {
        let fitted = levenberg_marquardt(measurements, engine, free, start, 40);
        if best.as_ref().is_none_or(|b| fitted.rms_log_error < b.rms_log_error) {
            best = Some(fitted);
        }
    }
    let best = best.expect("at least one starting point");
    for stat in Stat::ALL {
        if let Some(m) = mape(&best.residuals, stat)
            && m > MAX_MAPE
        {
            return Err(ModelFitError::Poor { stat: stat.as_str(), mape: 100.0 * m, limit: 100.0 * MAX_MAPE });
        }
    }
    Ok(best)
}

/// Refit from `start` (a warm start, e.g. the fit on all mixes for one of leave-one-out).
pub fn refit(
    measurements: &[&Measurement],
    engine: EngineLimits,
    free: FreeParameters,
    start: LatencyParams,
) -> ModelFit {
    levenberg_marquardt(measurements, engine, free, start, 15)
}

/// Starting points from a linear regression on the same data: per-request ITL against the
/// client-side concurrency (Little: requests decoding = rate × (latency − TTFT)) with the other
/// prompts' prefill stalls, TTFT of lone requests against prompt length. Two starts differ in
/// the scheduling delay (0 and 1 step).
fn starting_points(measurements: &[&Measurement]) -> Vec<LatencyParams> {
    // ITL ≈ α + β·n + η·n·L + δ·λ·I·ITL (the stalls take a share λ·δ·I of the engine's time).
    let mut rows = Vec::new();
    let mut ys = Vec::new();
    for m in measurements {
        let (Some(itl), Some(ttft)) = (m.itl_request.mean_ms, m.ttft.mean_ms) else { continue };
        let rps = m.predict_rps().unwrap_or(0.0);
        let decoding = match (m.load, m.mean_latency_s) {
            (Load::Synchronous, _) => 1.0,
            (_, Some(latency)) => (rps * (latency - ttft / 1000.0)).max(1.0),
            _ => continue,
        };
        let context = m.mean_input_tokens + m.output.second_moment() / (2.0 * m.mean_output_tokens.max(1.0));
        rows.push([1.0, decoding, decoding * context, rps / 1000.0 * m.mean_input_tokens * itl]);
        ys.push(itl);
    }
    let mut coefficients = [10.0, 0.02, 0.0, 0.02];
    if rows.len() >= 4 {
        let x = DMatrix::from_fn(rows.len(), 4, |r, c| rows[r][c] / ys[r]);
        let y = DVector::from_element(rows.len(), 1.0);
        if let Ok(solution) = x.svd(true, true).solve(&y, 1e-12) {
            for (c, v) in coefficients.iter_mut().zip(solution.iter()) {
                *c = v.max(0.0);
            }
        }
    }
    let [alpha, beta, eta, delta] = coefficients;
    // Lone requests: TTFT ≈ overhead + γ + δ·I; what δ·I does not explain is overhead.
    let lone: Vec<f64> = measurements
        .iter()
        .filter(|m| m.load == Load::Synchronous)
        .filter_map(|m| m.ttft.mean_ms.map(|t| t - delta * m.mean_input_tokens))
        .collect();
    let overhead = if lone.is_empty() { 5.0 } else { (lone.iter().sum::<f64>() / lone.len() as f64).max(0.0) };
    let base = LatencyParams {
        alpha_ms: alpha.max(0.1),
        beta_ms: beta.max(1e-4),
        gamma_ms: 0.0,
        delta_ms: delta.max(1e-4),
        prefill_quadratic_ms: 0.0,
        itl_context_ms: eta,
        itl_quadratic_ms: 0.0,
        ttft_overhead_ms: overhead,
        scheduling_delay_steps: 1.0,
        roofline_exponent: 2.0,
    };
    vec![base, LatencyParams { scheduling_delay_steps: 0.0, ..base }, LatencyParams { roofline_exponent: 1.0, ..base }]
}

/// The log-ratio residuals of one measurement; a measurement the model calls saturated adds a
/// penalty that grows with how far past saturation it was measured, so the search is pushed back.
fn measurement_residuals(m: &Measurement, engine: EngineLimits, params: LatencyParams, out: &mut Vec<f64>) {
    let rps = m.predict_rps().unwrap_or(0.0);
    let model = measured_replica(params, engine, m);
    let limit = 0.999 * model.saturation_rps();
    let penalty = if rps > limit && limit > 0.0 { 20.0 * (rps / limit).ln() } else { 0.0 };
    let steady = model.steady(rps.min(limit).max(0.0));
    for stat in Stat::ALL {
        let Some(measured) = stat.measured(m) else { continue };
        let predicted = steady.as_ref().map(|s| match stat {
            Stat::MeanTtft => s.mean_ttft_ms(),
            Stat::P90Ttft => s.ttft_quantile_ms(0.9),
            Stat::MeanItl => s.mean_itl_ms(ItlPopulation::Request),
            Stat::P90Itl => s.itl_quantile_ms(ItlPopulation::Request, 0.9),
        });
        out.push(match predicted {
            Some(p) if p.is_finite() && p > 0.0 => (p / measured).ln() + penalty,
            _ => 10.0,
        });
    }
}

/// Every measurement's residuals in order, computed on two threads (the measurements are
/// independent; the order, and so the result, does not depend on the threads).
fn residual_vector(measurements: &[&Measurement], engine: EngineLimits, params: LatencyParams) -> Vec<f64> {
    let half = measurements.len().div_ceil(2);
    let (first, second) = measurements.split_at(half.min(measurements.len()));
    let run = |part: &[&Measurement]| {
        let mut out = Vec::new();
        for m in part {
            measurement_residuals(m, engine, params, &mut out);
        }
        out
    };
    let (mut a, b) = std::thread::scope(|scope| {
        let handle = scope.spawn(|| run(second));
        let a = run(first);
        (a, handle.join().expect("residual thread"))
    });
    a.extend(b);
    a
}

fn cost(r: &[f64]) -> f64 {
    r.iter().map(|x| x * x).sum::<f64>()
}

/// Bounded Levenberg–Marquardt in scaled coordinates (θ_i / scale_i), forward-difference
/// Jacobian, steps projected onto the bounds.
fn levenberg_marquardt(
    measurements: &[&Measurement],
    engine: EngineLimits,
    free: FreeParameters,
    start: LatencyParams,
    max_iterations: usize,
) -> ModelFit {
    let movable: Vec<usize> = (0..PARAMETERS.len())
        .filter(|&i| match PARAMETERS[i].0 {
            "prefill_quadratic_ms" => free.prefill_quadratic,
            "itl_quadratic_ms" => free.itl_quadratic,
            _ => true,
        })
        .collect();
    let scale: Vec<f64> = PARAMETERS.iter().map(|p| p.1).collect();
    let upper: Vec<f64> = PARAMETERS.iter().map(|p| p.2 / p.1).collect();
    let lower: Vec<f64> = PARAMETERS.iter().map(|p| if p.0 == "roofline_exponent" { 1.0 } else { 0.0 }).collect();
    let mut x: Vec<f64> = to_vector(&start).iter().zip(&scale).map(|(v, s)| v / s).collect();
    let params_of = |x: &[f64]| {
        let mut v = [0.0; 10];
        for i in 0..10 {
            v[i] = x[i] * scale[i];
        }
        from_vector(&v)
    };
    let mut r = residual_vector(measurements, engine, params_of(&x));
    let mut current = cost(&r);
    let mut damping = 1e-2;
    let mut iterations = 0;
    let mut stalled = 0;
    while iterations < max_iterations && stalled < 3 {
        iterations += 1;
        // Jacobian of the residuals in the movable coordinates.
        let k = movable.len();
        let mut jac = DMatrix::<f64>::zeros(r.len(), k);
        for (col, &i) in movable.iter().enumerate() {
            let h = 1e-4 * x[i].abs().max(1.0);
            let mut xh = x.clone();
            let up = (x[i] + h).min(upper[i]);
            let step = if up > x[i] { up - x[i] } else { -h };
            xh[i] = x[i] + step;
            let rh = residual_vector(measurements, engine, params_of(&xh));
            if rh.len() != r.len() {
                continue;
            }
            for row in 0..r.len() {
                jac[(row, col)] = (rh[row] - r[row]) / step;
            }
        }
        let jt = jac.transpose();
        let jtj = &jt * &jac;
        let gradient = &jt * DVector::from_vec(r.clone());
        let mut improved = false;
        for _ in 0..8 {
            let mut a = jtj.clone();
            for d in 0..k {
                a[(d, d)] += damping * (jtj[(d, d)] + 1e-9);
            }
            let Some(delta) = a.lu().solve(&(-&gradient)) else {
                damping *= 10.0;
                continue;
            };
            let mut trial = x.clone();
            for (col, &i) in movable.iter().enumerate() {
                trial[i] = (x[i] + delta[col]).clamp(lower[i], upper[i]);
            }
            let rt = residual_vector(measurements, engine, params_of(&trial));
            let ct = cost(&rt);
            if ct < current {
                let relative = (current - ct) / current.max(1e-300);
                x = trial;
                r = rt;
                current = ct;
                damping = (damping / 3.0).max(1e-9);
                improved = true;
                stalled = if relative < 1e-6 { stalled + 1 } else { 0 };
                break;
            }
            damping *= 4.0;
        }
        if !improved {
            break;
        }
    }
    let params = params_of(&x);
    let residuals = residuals(params, engine, measurements);
    ModelFit { params, rms_log_error: (current / r.len().max(1) as f64).sqrt(), residuals, iterations }
}

/// The largest rate at which the measured statistics meet `slo`, read off one mix's runs
/// (sorted by rate; the synchronous run at rate 0): linear between the last run that meets and
/// the first that does not. `censored` when every run meets (the capacity is at least `rps`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MeasuredCapacity {
    pub rps: f64,
    pub censored: bool,
}

/// See [`MeasuredCapacity`].
pub fn measured_capacity(runs: &[&Measurement], slo: &Slo) -> Option<MeasuredCapacity> {
    let mut points: Vec<(f64, Vec<(f64, f64)>)> = Vec::new(); // (rate, [(value, target)])
    for m in runs {
        let Some(rps) = m.predict_rps() else { continue };
        let mut checks = Vec::new();
        for (target, value) in [
            (slo.ttft, slo.ttft.and_then(|t| observed(m, t, false))),
            (slo.itl, slo.itl.and_then(|t| observed(m, t, true))),
        ] {
            if let Some(t) = target {
                checks.push((value?, t.ms));
            }
        }
        points.push((rps, checks));
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let meets = |checks: &[(f64, f64)]| checks.iter().all(|(v, t)| v <= t);
    let first = points.first()?;
    if !meets(&first.1) {
        return Some(MeasuredCapacity { rps: 0.0, censored: false });
    }
    for w in points.windows(2) {
        let ((r0, c0), (r1, c1)) = (&w[0], &w[1]);
        if meets(c1) {
            continue;
        }
        // The first crossing among the constraints the next run breaks.
        let crossing = c0
            .iter()
            .zip(c1)
            .filter(|(_, (v1, t))| v1 > t)
            .map(|((v0, t), (v1, _))| if v1 > v0 { r0 + (t - v0) / (v1 - v0) * (r1 - r0) } else { *r0 })
            .fold(*r1, f64::min);
        return Some(MeasuredCapacity { rps: crossing.clamp(*r0, *r1), censored: false });
    }
    Some(MeasuredCapacity { rps: points.last()?.0, censored: true })
}

/// A measurement's value of one target's statistic.
fn observed(m: &Measurement, t: crate::analyze::capacity::Target, itl: bool) -> Option<f64> {
    use crate::analyze::Statistic::*;
    let o = if itl {
        match t.over {
            ItlPopulation::Request => &m.itl_request,
            ItlPopulation::Token => &m.itl_token,
        }
    } else {
        &m.ttft
    };
    match t.statistic {
        Mean => o.mean_ms,
        P50 => o.p50_ms,
        P90 => o.p90_ms,
        P99 => o.p99_ms,
        P95 => None,
    }
}

/// The capacity the model predicts for a mix's workload (its middle run's sizes), at its
/// arrival variability, with no stability margin beyond 0.1 %.
pub fn predicted_capacity(
    params: LatencyParams,
    engine: EngineLimits,
    runs: &[&Measurement],
    slo: &Slo,
) -> Option<Capacity> {
    let rate_runs: Vec<&&Measurement> = runs.iter().filter(|m| matches!(m.load, Load::Rate { .. })).collect();
    let m = rate_runs.get(rate_runs.len() / 2).copied().or(runs.first())?;
    let model = measured_replica(params, engine, m);
    Some(capacity_at_slo(&model, slo, 0.999))
}
