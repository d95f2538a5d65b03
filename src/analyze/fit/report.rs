//! One fit from load-generator measurements, with its checks: which runs were used and why the
//! others were not, the fitted parameters, per-point residuals, and — per workload mix — the
//! errors and capacities at SLOs when that mix is left out of the fit.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::measurement::{Excluded, Measurement};
use super::through_model::{
    FreeParameters, MeasuredCapacity, ModelFit, ModelFitError, PointResidual, Stat, fit, mape, measured_capacity,
    predicted_capacity, refit, residuals,
};
use crate::analyze::LatencyParams;
use crate::analyze::capacity::Slo;
use crate::analyze::engine::EngineLimits;

/// What to fit and check.
#[derive(Clone, Debug)]
pub struct FitRequest {
    pub measurements: Vec<Measurement>,
    pub engine: EngineLimits,
    pub free: FreeParameters,
    /// Named SLOs whose capacities are compared, measured against predicted, per mix.
    pub slos: Vec<(String, Slo)>,
    /// Refit without each mix and predict it (slower: one refit per mix).
    pub leave_one_mix_out: bool,
}

/// The capacity at one SLO of one mix, measured and predicted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CapacityCheck {
    pub slo: String,
    pub measured: MeasuredCapacity,
    /// The model's capacity (req/s); 0 when it calls the SLO infeasible.
    pub predicted_rps: f64,
    /// predicted / measured − 1 (`None` when the measured capacity is 0 or censored).
    pub relative_error: Option<f64>,
}

/// How the model does on one mix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MixCheck {
    pub mix: String,
    /// Mean absolute relative error per statistic on this mix's usable runs.
    pub mape: BTreeMap<Stat, f64>,
    pub capacities: Vec<CapacityCheck>,
}

/// The whole outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct FitReport {
    pub params: LatencyParams,
    pub used: Vec<String>,
    pub excluded: Vec<Excluded>,
    pub residuals: Vec<PointResidual>,
    /// In-sample mean absolute relative error per statistic.
    pub mape: BTreeMap<Stat, f64>,
    /// Per mix, in sample.
    pub in_sample: Vec<MixCheck>,
    /// Per mix, fitted without it (when asked for).
    pub leave_one_out: Vec<MixCheck>,
    pub iterations: usize,
}

/// Why no profile came out.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FitReportError {
    #[error("no measurements")]
    Empty,
    #[error("no usable measurements: {}", .0.iter().map(|e| format!("{}: {}", e.label, e.reason)).collect::<Vec<_>>().join("; "))]
    NoneUsable(Vec<Excluded>),
    #[error(transparent)]
    Fit(#[from] ModelFitError),
}

/// Screen, fit, check.
pub fn fit_report(request: &FitRequest) -> Result<FitReport, FitReportError> {
    if request.measurements.is_empty() {
        return Err(FitReportError::Empty);
    }
    let mut used: Vec<&Measurement> = Vec::new();
    let mut excluded = Vec::new();
    for m in &request.measurements {
        match m.steady_state() {
            Ok(()) => used.push(m),
            Err(reason) => excluded.push(Excluded { label: m.label.clone(), reason }),
        }
    }
    if used.is_empty() {
        return Err(FitReportError::NoneUsable(excluded));
    }
    let fitted = fit(&used, request.engine, request.free)?;
    let mixes: BTreeSet<&str> = used.iter().map(|m| m.mix.as_str()).collect();
    let check = |params: LatencyParams, mix: &str| -> MixCheck {
        let runs: Vec<&Measurement> = used.iter().copied().filter(|m| m.mix == mix).collect();
        let r = residuals(params, request.engine, &runs);
        let capacities = request
            .slos
            .iter()
            .filter_map(|(name, slo)| {
                let measured = measured_capacity(&runs, slo)?;
                let predicted = predicted_capacity(params, request.engine, &runs, slo)?;
                let relative_error =
                    (measured.rps > 0.0 && !measured.censored).then(|| predicted.rps / measured.rps - 1.0);
                Some(CapacityCheck { slo: name.clone(), measured, predicted_rps: predicted.rps, relative_error })
            })
            .collect();
        MixCheck { mix: mix.to_string(), mape: mape_by_stat(&r), capacities }
    };
    let in_sample: Vec<MixCheck> = mixes.iter().map(|mix| check(fitted.params, mix)).collect();
    let leave_one_out = if request.leave_one_mix_out && mixes.len() > 1 {
        mixes
            .iter()
            .map(|mix| {
                let others: Vec<&Measurement> = used.iter().copied().filter(|m| m.mix != *mix).collect();
                let ModelFit { params, .. } = refit(&others, request.engine, request.free, fitted.params);
                check(params, mix)
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(FitReport {
        params: fitted.params,
        used: used.iter().map(|m| m.label.clone()).collect(),
        excluded,
        mape: mape_by_stat(&fitted.residuals),
        residuals: fitted.residuals,
        in_sample,
        leave_one_out,
        iterations: fitted.iterations,
    })
}

fn mape_by_stat(residuals: &[PointResidual]) -> BTreeMap<Stat, f64> {
    Stat::ALL.iter().filter_map(|&s| mape(residuals, s).map(|m| (s, m))).collect()
}
