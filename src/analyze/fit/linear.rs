//! Fitting latency profiles from measurements (DESIGN §3 "Fitting").
//!
//! Pure least squares on in-memory points; reading files and writing profiles is the CLI's job
//! (`cli::fit`). Every fit is constrained to non-negative parameters: a latency model with a
//! negative fixed cost or a negative per-token cost is not a physical statement, so when the
//! unconstrained solution has a negative coefficient the exact non-negative least-squares
//! solution is computed instead (by enumerating the subsets of free parameters, see
//! [`fit_nonneg`]) and the parameters held at 0 are reported in [`LinearFit::clamped`].
//!
//! Fits that carry no information are refused with a [`FitError`]: too few points, no spread in
//! the regressor, a slope that is not positive (latency that does not grow with load), a low R²,
//! non-finite or non-positive inputs.

use nalgebra::{DMatrix, DVector};
use thiserror::Error;

use crate::analyze::LatencyParams;
use crate::scenario::profile::FitQuality;

/// Default lower bound on R² below which a fit is refused.
pub const DEFAULT_MIN_R2: f64 = 0.8;

/// Most parameters [`fit_nonneg`] accepts (it enumerates 2^p subsets).
pub const MAX_PARAMETERS: usize = 6;

/// Options shared by the fits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    /// Refuse a fit whose R² is below this.
    pub min_r2: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions { min_r2: DEFAULT_MIN_R2 }
    }
}

/// Why a fit was refused.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum FitError {
    #[error("{what}: {points} points for {parameters} parameters; need at least {needed}")]
    TooFewPoints { what: &'static str, points: usize, parameters: usize, needed: usize },
    #[error("{what}: point {index} has a non-finite value ({value})")]
    NonFinite { what: &'static str, index: usize, value: f64 },
    #[error("{what}: point {index} has {field} = {value}; it must be > 0")]
    NonPositiveInput { what: &'static str, index: usize, field: &'static str, value: f64 },
    #[error("{what}: every point has the same {regressor} ({value}); no spread to fit a slope")]
    NoSpread { what: &'static str, regressor: &'static str, value: f64 },
    #[error("{what}: the regressors are collinear (design matrix rank {rank} < {parameters})")]
    RankDeficient { what: &'static str, rank: usize, parameters: usize },
    #[error(
        "{what}: slope {parameter} = {value} is not positive: latency does not grow with load, \
         the fit is meaningless"
    )]
    NonPositiveSlope { what: &'static str, parameter: &'static str, value: f64 },
    #[error("{what}: R² = {r2:.4} is below the minimum {min_r2}")]
    LowR2 { what: &'static str, r2: f64, min_r2: f64 },
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

/// The residual of one input point: `observed − fitted`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Residual {
    /// Index of the point in the input slice.
    pub index: usize,
    pub observed_ms: f64,
    pub fitted_ms: f64,
    pub residual_ms: f64,
}

/// A non-negative least-squares solution of `y ≈ X·c`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearFit {
    /// The constrained coefficients (all ≥ 0), one per design column.
    pub coefficients: Vec<f64>,
    /// The unconstrained least-squares coefficients (may be negative).
    pub unconstrained: Vec<f64>,
    /// Names of the parameters held at 0 by the non-negativity constraint.
    pub clamped: Vec<&'static str>,
    /// Goodness of fit of the constrained solution, unweighted, on the original points.
    pub quality: FitQuality,
    /// One residual per point, in input order.
    pub residuals: Vec<Residual>,
}

impl LinearFit {
    /// The `k` residuals of largest absolute value, largest first.
    pub fn largest_residuals(&self, k: usize) -> Vec<Residual> {
        largest_residuals(&self.residuals, k)
    }
}

/// The `k` residuals of largest absolute value, largest first (ties by input order).
pub fn largest_residuals(residuals: &[Residual], k: usize) -> Vec<Residual> {
    let mut sorted = residuals.to_vec();
    sorted.sort_by(|a, b| b.residual_ms.abs().total_cmp(&a.residual_ms.abs()).then(a.index.cmp(&b.index)));
    sorted.truncate(k);
    sorted
}

/// `ITL(n) = α + β·n (+ η·n·L)` fitted on (batch, ITL) or (batch, context, ITL) points.
#[derive(Clone, Debug, PartialEq)]
pub struct ItlFit {
    pub alpha_ms: f64,
    pub beta_ms: f64,
    /// η; 0 when the points carry no context spread.
    pub eta_ms: f64,
    pub fit: LinearFit,
}

/// `prefill(n) = γ + δ·I·n (+ ε·I²·n)` fitted on (batch, prompt tokens, prefill time) points.
#[derive(Clone, Debug, PartialEq)]
pub struct PrefillFit {
    pub gamma_ms: f64,
    pub delta_ms: f64,
    /// ε; 0 when the quadratic term was not fitted.
    pub epsilon_ms: f64,
    pub quadratic: bool,
    pub fit: LinearFit,
}

/// Combine the two fits into profile parameters.
pub fn latency_params(itl: &ItlFit, prefill: &PrefillFit) -> LatencyParams {
    LatencyParams {
        alpha_ms: itl.alpha_ms,
        beta_ms: itl.beta_ms,
        itl_context_ms: itl.eta_ms,
        gamma_ms: prefill.gamma_ms,
        delta_ms: prefill.delta_ms,
        prefill_quadratic_ms: prefill.epsilon_ms,
        ..LatencyParams::default()
    }
}

const ITL: &str = "ITL fit";
const PREFILL: &str = "prefill fit";

/// Fit `ITL(n) = α + β·n` on `(batch size, ITL in ms)` points, α ≥ 0, β > 0.
pub fn fit_itl(points: &[(f64, f64)], options: &FitOptions) -> Result<ItlFit, FitError> {
    for (i, &(n, y)) in points.iter().enumerate() {
        check_finite(ITL, i, &[n, y])?;
        check_positive(ITL, i, "batch size", n)?;
        check_positive(ITL, i, "ITL", y)?;
    }
    let xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    check_count(ITL, points.len(), 2)?;
    check_spread(ITL, "batch size", &xs)?;
    let design = DMatrix::from_fn(points.len(), 2, |r, c| if c == 0 { 1.0 } else { xs[r] });
    let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    let fit = fit_nonneg(ITL, &design, &ys, None, &["alpha", "beta"])?;
    check_slope(ITL, "beta", fit.coefficients[1], &ys)?;
    check_r2(ITL, &fit, options)?;
    Ok(ItlFit { alpha_ms: fit.coefficients[0], beta_ms: fit.coefficients[1], eta_ms: 0.0, fit })
}

/// Fit `ITL(n, L) = α + β·n + η·n·L` on `(batch size, context tokens, ITL in ms)` points; α, η ≥
/// 0, β > 0. Without spread in n·L beyond n (one context length), η is not identifiable and the
/// plain `α + β·n` fit is returned.
pub fn fit_itl_with_context(points: &[(f64, f64, f64)], options: &FitOptions) -> Result<ItlFit, FitError> {
    for (i, &(n, l, y)) in points.iter().enumerate() {
        check_finite(ITL, i, &[n, l, y])?;
        check_positive(ITL, i, "batch size", n)?;
        check_positive(ITL, i, "context tokens", l)?;
        check_positive(ITL, i, "ITL", y)?;
    }
    let contexts: Vec<f64> = points.iter().map(|p| p.1).collect();
    if check_spread(ITL, "context tokens", &contexts).is_err() {
        let plain: Vec<(f64, f64)> = points.iter().map(|&(n, _, y)| (n, y)).collect();
        return fit_itl(&plain, options);
    }
    check_count(ITL, points.len(), 3)?;
    let ns: Vec<f64> = points.iter().map(|p| p.0).collect();
    check_spread(ITL, "batch size", &ns)?;
    let design = DMatrix::from_fn(points.len(), 3, |r, c| {
        let (n, l, _) = points[r];
        match c {
            0 => 1.0,
            1 => n,
            _ => n * l,
        }
    });
    let ys: Vec<f64> = points.iter().map(|p| p.2).collect();
    let fit = fit_nonneg(ITL, &design, &ys, None, &["alpha", "beta", "eta"])?;
    check_slope(ITL, "beta", fit.coefficients[1], &ys)?;
    check_r2(ITL, &fit, options)?;
    Ok(ItlFit { alpha_ms: fit.coefficients[0], beta_ms: fit.coefficients[1], eta_ms: fit.coefficients[2], fit })
}

/// Fit `prefill(n) = γ + δ·I·n (+ ε·I²·n when `quadratic`)` on
/// `(batch size n, prompt tokens I, prefill time of the batch in ms)` points; γ, ε ≥ 0, δ > 0.
pub fn fit_prefill(points: &[(f64, f64, f64)], quadratic: bool, options: &FitOptions) -> Result<PrefillFit, FitError> {
    for (i, &(n, prompt, y)) in points.iter().enumerate() {
        check_finite(PREFILL, i, &[n, prompt, y])?;
        check_positive(PREFILL, i, "batch size", n)?;
        check_positive(PREFILL, i, "prompt tokens", prompt)?;
        check_positive(PREFILL, i, "prefill time", y)?;
    }
    let parameters = if quadratic { 3 } else { 2 };
    check_count(PREFILL, points.len(), parameters)?;
    let tokens: Vec<f64> = points.iter().map(|&(n, prompt, _)| n * prompt).collect();
    check_spread(PREFILL, "batch·prompt tokens", &tokens)?;
    let design = DMatrix::from_fn(points.len(), parameters, |r, c| {
        let (n, prompt, _) = points[r];
        match c {
            0 => 1.0,
            1 => n * prompt,
            _ => n * prompt * prompt,
        }
    });
    let ys: Vec<f64> = points.iter().map(|p| p.2).collect();
    let names: &[&'static str] = if quadratic { &["gamma", "delta", "epsilon"] } else { &["gamma", "delta"] };
    let fit = fit_nonneg(PREFILL, &design, &ys, None, names)?;
    check_slope(PREFILL, "delta", fit.coefficients[1], &ys)?;
    check_r2(PREFILL, &fit, options)?;
    Ok(PrefillFit {
        gamma_ms: fit.coefficients[0],
        delta_ms: fit.coefficients[1],
        epsilon_ms: if quadratic { fit.coefficients[2] } else { 0.0 },
        quadratic,
        fit,
    })
}

/// Non-negative (weighted) linear least squares: minimize `Σ wᵢ (yᵢ − Xᵢ·c)²` subject to `c ≥ 0`.
///
/// Solves the unconstrained problem first (SVD on column-scaled `X`, never the normal
/// equations). If a coefficient is negative, every subset of free parameters is solved
/// unconstrained on its columns (the others held at 0); the feasible subset with the smallest
/// residual is the exact NNLS optimum (at the optimum, the free coefficients are the
/// unconstrained solution on their columns). `names` names the columns; it must have one entry
/// per column and at most [`MAX_PARAMETERS`]. Quality is computed unweighted. This checks the
/// inputs only for shape, finiteness and rank; the spread, slope and R² checks are the callers'.
pub fn fit_nonneg(
    what: &'static str,
    design: &DMatrix<f64>,
    y: &[f64],
    weights: Option<&[f64]>,
    names: &[&'static str],
) -> Result<LinearFit, FitError> {
    let (rows, cols) = design.shape();
    if names.len() != cols || cols == 0 || cols > MAX_PARAMETERS {
        return Err(FitError::Invalid {
            what,
            detail: format!("{cols} design columns for {} names (1..={MAX_PARAMETERS} allowed)", names.len()),
        });
    }
    if y.len() != rows {
        return Err(FitError::Invalid { what, detail: format!("{} observations for {rows} design rows", y.len()) });
    }
    if rows < cols {
        return Err(FitError::TooFewPoints { what, points: rows, parameters: cols, needed: cols });
    }
    for r in 0..rows {
        check_finite(what, r, &[y[r]])?;
        for c in 0..cols {
            check_finite(what, r, &[design[(r, c)]])?;
        }
    }
    let sqrt_w: Vec<f64> = match weights {
        None => vec![1.0; rows],
        Some(w) => {
            if w.len() != rows {
                return Err(FitError::Invalid { what, detail: format!("{} weights for {rows} points", w.len()) });
            }
            let mut out = Vec::with_capacity(rows);
            for (i, &wi) in w.iter().enumerate() {
                check_finite(what, i, &[wi])?;
                check_positive(what, i, "weight", wi)?;
                out.push(wi.sqrt());
            }
            out
        }
    };
    let wx = DMatrix::from_fn(rows, cols, |r, c| design[(r, c)] * sqrt_w[r]);
    let wy = DVector::from_fn(rows, |r, _| y[r] * sqrt_w[r]);

    let all: Vec<usize> = (0..cols).collect();
    let unconstrained = solve_subset(what, &wx, &wy, &all)?;
    let coefficients = if unconstrained.iter().all(|&c| c >= 0.0) {
        unconstrained.clone()
    } else {
        let mut best: Option<(f64, Vec<f64>)> = None;
        for mask in 0..(1usize << cols) {
            let subset: Vec<usize> = (0..cols).filter(|c| mask & (1 << c) != 0).collect();
            let coef = if subset.is_empty() { vec![0.0; cols] } else { solve_subset(what, &wx, &wy, &subset)? };
            if coef.iter().any(|&c| c < 0.0) {
                continue;
            }
            let sse = weighted_sse(&wx, &wy, &coef);
            if best.as_ref().is_none_or(|(b, _)| sse < *b) {
                best = Some((sse, coef));
            }
        }
        // The empty subset (all zeros) is always feasible.
        best.map(|(_, c)| c).unwrap_or_else(|| vec![0.0; cols])
    };
    let clamped = (0..cols).filter(|&c| coefficients[c] == 0.0 && unconstrained[c] != 0.0).map(|c| names[c]).collect();

    let residuals: Vec<Residual> = (0..rows)
        .map(|r| {
            let fitted: f64 = (0..cols).map(|c| design[(r, c)] * coefficients[c]).sum();
            Residual { index: r, observed_ms: y[r], fitted_ms: fitted, residual_ms: y[r] - fitted }
        })
        .collect();
    let quality = quality(y, &residuals);
    Ok(LinearFit { coefficients, unconstrained, clamped, quality, residuals })
}

/// Unconstrained least squares of `wy ≈ wx[:, subset]·c`, returned as a full-length vector
/// (0 outside `subset`). Columns are scaled to unit norm before the SVD.
fn solve_subset(
    what: &'static str,
    wx: &DMatrix<f64>,
    wy: &DVector<f64>,
    subset: &[usize],
) -> Result<Vec<f64>, FitError> {
    let rows = wx.nrows();
    let mut scale = Vec::with_capacity(subset.len());
    for &c in subset {
        let norm = wx.column(c).norm();
        scale.push(if norm > 0.0 { norm } else { 1.0 });
    }
    let a = DMatrix::from_fn(rows, subset.len(), |r, j| wx[(r, subset[j])] / scale[j]);
    let svd = a.svd(true, true);
    let max_sv = svd.singular_values.iter().copied().fold(0.0, f64::max);
    let eps = max_sv * 1e-10;
    let rank = svd.rank(eps);
    if rank < subset.len() {
        return Err(FitError::RankDeficient { what, rank, parameters: subset.len() });
    }
    let sol = svd.solve(wy, eps).map_err(|e| FitError::Invalid { what, detail: e.to_string() })?;
    let mut out = vec![0.0; wx.ncols()];
    for (j, &c) in subset.iter().enumerate() {
        out[c] = sol[j] / scale[j];
    }
    if out.iter().any(|v| !v.is_finite()) {
        return Err(FitError::Invalid { what, detail: "least-squares solution is not finite".into() });
    }
    Ok(out)
}

fn weighted_sse(wx: &DMatrix<f64>, wy: &DVector<f64>, coef: &[f64]) -> f64 {
    (0..wx.nrows())
        .map(|r| {
            let fitted: f64 = (0..wx.ncols()).map(|c| wx[(r, c)] * coef[c]).sum();
            (wy[r] - fitted).powi(2)
        })
        .sum()
}

/// R², RMSE and MAPE of residuals against the observations (unweighted).
fn quality(y: &[f64], residuals: &[Residual]) -> FitQuality {
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n;
    let sst: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let sse: f64 = residuals.iter().map(|r| r.residual_ms.powi(2)).sum();
    let r2 = if sst > 0.0 {
        1.0 - sse / sst
    } else if sse == 0.0 {
        1.0
    } else {
        0.0
    };
    let mape = residuals
        .iter()
        .map(|r| if r.observed_ms != 0.0 { (r.residual_ms / r.observed_ms).abs() } else { 0.0 })
        .sum::<f64>()
        / n;
    FitQuality { r2, rmse_ms: (sse / n).sqrt(), mape, points: y.len() }
}

fn check_finite(what: &'static str, index: usize, values: &[f64]) -> Result<(), FitError> {
    match values.iter().find(|v| !v.is_finite()) {
        Some(&value) => Err(FitError::NonFinite { what, index, value }),
        None => Ok(()),
    }
}

fn check_positive(what: &'static str, index: usize, field: &'static str, value: f64) -> Result<(), FitError> {
    if value > 0.0 { Ok(()) } else { Err(FitError::NonPositiveInput { what, index, field, value }) }
}

/// A meaningful fit needs at least two more points than parameters.
fn check_count(what: &'static str, points: usize, parameters: usize) -> Result<(), FitError> {
    let needed = parameters + 2;
    if points < needed { Err(FitError::TooFewPoints { what, points, parameters, needed }) } else { Ok(()) }
}

fn check_spread(what: &'static str, regressor: &'static str, xs: &[f64]) -> Result<(), FitError> {
    match xs.first() {
        Some(&first) if xs.iter().all(|&x| x == first) => Err(FitError::NoSpread { what, regressor, value: first }),
        _ => Ok(()),
    }
}

/// The slope must be positive, and the response must vary at all (a constant response fits
/// any slope-0 line exactly, up to rounding).
fn check_slope(what: &'static str, parameter: &'static str, value: f64, ys: &[f64]) -> Result<(), FitError> {
    let flat = ys.first().is_some_and(|&first| ys.iter().all(|&y| y == first));
    if flat || value <= 0.0 {
        return Err(FitError::NonPositiveSlope { what, parameter, value: if flat { 0.0 } else { value } });
    }
    Ok(())
}

fn check_r2(what: &'static str, fit: &LinearFit, options: &FitOptions) -> Result<(), FitError> {
    let r2 = fit.quality.r2;
    if !r2.is_finite() || r2 < options.min_r2 {
        return Err(FitError::LowR2 { what, r2, min_r2: options.min_r2 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-12)
    }

    /// Deterministic pseudo-noise in [-1, 1] (no RNG dependency).
    fn noise(i: usize) -> f64 {
        let x = ((i as f64 + 1.0) * 12.9898).sin() * 43758.5453;
        2.0 * (x - x.floor()) - 1.0
    }

    const BATCHES: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

    #[test]
    fn itl_recovers_noiseless_parameters() {
        let points: Vec<(f64, f64)> = BATCHES.iter().map(|&n| (n, 30.0 + 0.3 * n)).collect();
        let fit = fit_itl(&points, &FitOptions::default()).expect("fit");
        assert!(close(fit.alpha_ms, 30.0, 1e-9), "{}", fit.alpha_ms);
        assert!(close(fit.beta_ms, 0.3, 1e-9), "{}", fit.beta_ms);
        assert!(fit.fit.quality.r2 > 0.999_999);
        assert!(fit.fit.quality.rmse_ms < 1e-9);
        assert!(fit.fit.clamped.is_empty());
        assert_eq!(fit.fit.residuals.len(), 7);
        assert_eq!(fit.fit.quality.points, 7);
    }

    #[test]
    fn itl_recovers_noisy_parameters() {
        let points: Vec<(f64, f64)> = (0..5)
            .flat_map(|rep| BATCHES.iter().enumerate().map(move |(k, &n)| (n, rep * 7 + k)))
            .map(|(n, i)| (n, 40.0 + 0.5 * n + 0.4 * noise(i)))
            .collect();
        let fit = fit_itl(&points, &FitOptions::default()).expect("fit");
        assert!(close(fit.alpha_ms, 40.0, 0.01), "{}", fit.alpha_ms);
        assert!(close(fit.beta_ms, 0.5, 0.02), "{}", fit.beta_ms);
        assert!(fit.fit.quality.r2 > 0.99);
        assert!(fit.fit.quality.mape < 0.01);
        let worst = fit.fit.largest_residuals(3);
        assert_eq!(worst.len(), 3);
        assert!(worst[0].residual_ms.abs() >= worst[1].residual_ms.abs());
        assert!(worst[1].residual_ms.abs() >= worst[2].residual_ms.abs());
        assert!(worst[0].residual_ms.abs() <= 0.6, "noise is at most 0.4 ms");
    }

    #[test]
    fn prefill_recovers_linear_parameters() {
        let mut points = Vec::new();
        for &prompt in &[128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0] {
            points.push((1.0, prompt, 12.0 + 0.09 * prompt));
        }
        for &n in &BATCHES {
            points.push((n, 512.0, 12.0 + 0.09 * 512.0 * n));
        }
        let fit = fit_prefill(&points, false, &FitOptions::default()).expect("fit");
        assert!(close(fit.gamma_ms, 12.0, 1e-9));
        assert!(close(fit.delta_ms, 0.09, 1e-9));
        assert_eq!(fit.epsilon_ms, 0.0);
        assert!(!fit.quadratic);
    }

    /// Super-linear prefill whose straight-line fit has a negative intercept (as on A100).
    fn superlinear_points() -> Vec<(f64, f64, f64)> {
        let f = |n: f64, i: f64| 5.0 + 0.05 * n * i + 1e-5 * n * i * i;
        let mut points = Vec::new();
        for &prompt in &[128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0] {
            points.push((1.0, prompt, f(1.0, prompt)));
        }
        for &n in &BATCHES[1..] {
            points.push((n, 512.0, f(n, 512.0)));
        }
        points
    }

    #[test]
    fn negative_intercept_is_clamped_and_reported() {
        // prefill = −50 + 0.1·n·I: the unconstrained γ is −50 ms.
        let mut points: Vec<(f64, f64, f64)> =
            [1024.0, 2048.0, 4096.0, 8192.0].iter().map(|&i| (1.0, i, 0.1 * i - 50.0)).collect();
        points.extend(BATCHES[1..].iter().map(|&n| (n, 1024.0, 0.1 * 1024.0 * n - 50.0)));
        let fit = fit_prefill(&points, false, &FitOptions::default()).expect("fit");
        assert!(close(fit.fit.unconstrained[0], -50.0, 1e-9), "{:?}", fit.fit.unconstrained);
        assert_eq!(fit.gamma_ms, 0.0);
        assert_eq!(fit.fit.clamped, vec!["gamma"]);
        assert!(fit.delta_ms > 0.0);
        // The clamped solution is the best γ = 0 fit: a through-origin least-squares slope.
        let sxy: f64 = points.iter().map(|p| p.0 * p.1 * p.2).sum();
        let sxx: f64 = points.iter().map(|p| (p.0 * p.1).powi(2)).sum();
        assert!(close(fit.delta_ms, sxy / sxx, 1e-9));
    }

    #[test]
    fn nnls_matches_brute_force_grid() {
        // y = 10 − 2x: unconstrained slope is negative; NNLS is (mean y, 0).
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        let design = DMatrix::from_fn(5, 2, |r, c| if c == 0 { 1.0 } else { xs[r] });
        let y: Vec<f64> = xs.iter().map(|x| 10.0 - 2.0 * x).collect();
        let fit = fit_nonneg("test", &design, &y, None, &["a", "b"]).expect("fit");
        assert!(close(fit.unconstrained[1], -2.0, 1e-9));
        assert_eq!(fit.clamped, vec!["b"]);
        assert!(close(fit.coefficients[0], 4.0, 1e-9));
        assert_eq!(fit.coefficients[1], 0.0);
    }

    #[test]
    fn weights_change_the_fit() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [1.0, 2.0, 3.0, 4.0, 10.0];
        let design = DMatrix::from_fn(5, 2, |r, c| if c == 0 { 1.0 } else { xs[r] });
        let w = [1.0, 1.0, 1.0, 1.0, 1e-9];
        let fit = fit_nonneg("test", &design, &y, Some(&w), &["a", "b"]).expect("fit");
        assert!(close(fit.coefficients[1], 1.0, 1e-6), "{:?}", fit.coefficients);
        assert!(fit.coefficients[0].abs() < 1e-6);
    }

    #[test]
    fn quadratic_improves_r2_on_quadratic_data() {
        let points = superlinear_points();
        let options = FitOptions { min_r2: 0.5 };
        let linear = fit_prefill(&points, false, &options).expect("linear");
        let quad = fit_prefill(&points, true, &options).expect("quadratic");
        assert!(quad.fit.quality.r2 > linear.fit.quality.r2);
        assert!(quad.fit.quality.r2 > 0.999_999);
        assert!(close(quad.gamma_ms, 5.0, 1e-6), "{}", quad.gamma_ms);
        assert!(close(quad.delta_ms, 0.05, 1e-6));
        assert!(close(quad.epsilon_ms, 1e-5, 1e-6));
        assert!(quad.fit.clamped.is_empty());
    }

    #[test]
    fn refuses_too_few_points() {
        let err = fit_itl(&[(1.0, 30.0), (2.0, 31.0), (4.0, 32.0)], &FitOptions::default()).unwrap_err();
        assert_eq!(err, FitError::TooFewPoints { what: ITL, points: 3, parameters: 2, needed: 4 });
        let pts = [(1.0, 128.0, 20.0), (1.0, 256.0, 30.0), (1.0, 512.0, 50.0), (2.0, 512.0, 90.0)];
        assert!(matches!(
            fit_prefill(&pts, true, &FitOptions::default()),
            Err(FitError::TooFewPoints { needed: 5, .. })
        ));
    }

    #[test]
    fn refuses_no_spread() {
        let points = [(8.0, 30.0), (8.0, 31.0), (8.0, 32.0), (8.0, 30.5)];
        let err = fit_itl(&points, &FitOptions::default()).unwrap_err();
        assert!(matches!(err, FitError::NoSpread { value, .. } if value == 8.0), "{err}");
    }

    #[test]
    fn refuses_flat_or_falling_latency() {
        let flat: Vec<(f64, f64)> = BATCHES.iter().map(|&n| (n, 30.0)).collect();
        let err = fit_itl(&flat, &FitOptions::default()).unwrap_err();
        assert!(matches!(err, FitError::NonPositiveSlope { parameter: "beta", .. }), "{err}");
        let falling: Vec<(f64, f64)> = BATCHES.iter().map(|&n| (n, 100.0 - n)).collect();
        let err = fit_itl(&falling, &FitOptions::default()).unwrap_err();
        assert!(matches!(err, FitError::NonPositiveSlope { parameter: "beta", value, .. } if value == 0.0), "{err}");
    }

    #[test]
    fn refuses_low_r2() {
        let points: Vec<(f64, f64)> =
            (0..20).map(|i| (1.0 + i as f64, 30.0 + 0.01 * i as f64 + 5.0 * noise(i))).collect();
        let fit = fit_itl(&points, &FitOptions { min_r2: 0.0 });
        let err = fit_itl(&points, &FitOptions::default()).unwrap_err();
        match fit {
            Ok(f) => {
                assert!(f.fit.quality.r2 < 0.8);
                assert!(matches!(err, FitError::LowR2 { min_r2, .. } if min_r2 == 0.8), "{err}");
            }
            // A noisy flat line may also come out with a non-positive slope: refused either way.
            Err(e) => assert!(matches!(e, FitError::NonPositiveSlope { .. }), "{e}"),
        }
    }

    #[test]
    fn refuses_non_finite_and_non_positive_inputs() {
        let mut points: Vec<(f64, f64)> = BATCHES.iter().map(|&n| (n, 30.0 + n)).collect();
        points[3].1 = f64::NAN;
        assert!(matches!(fit_itl(&points, &FitOptions::default()), Err(FitError::NonFinite { index: 3, .. })));
        points[3].1 = 30.0;
        points[2].0 = 0.0;
        assert!(matches!(fit_itl(&points, &FitOptions::default()), Err(FitError::NonPositiveInput { index: 2, .. })));
    }

    #[test]
    fn refuses_collinear_quadratic() {
        // All prompts equal: batch·prompt² is proportional to batch·prompt.
        let points: Vec<(f64, f64, f64)> = BATCHES.iter().map(|&n| (n, 512.0, 10.0 + 0.1 * 512.0 * n)).collect();
        let err = fit_prefill(&points, true, &FitOptions::default()).unwrap_err();
        assert!(matches!(err, FitError::RankDeficient { rank: 2, parameters: 3, .. }), "{err}");
    }

    #[test]
    fn latency_params_combines_fits() {
        let itl = fit_itl(&BATCHES.iter().map(|&n| (n, 30.0 + 0.3 * n)).collect::<Vec<_>>(), &FitOptions::default())
            .expect("itl");
        let pre = fit_prefill(&superlinear_points(), true, &FitOptions::default()).expect("prefill");
        let p = latency_params(&itl, &pre);
        assert!(close(p.alpha_ms, 30.0, 1e-9));
        assert!(close(p.prefill_quadratic_ms, 1e-5, 1e-6));
        assert_eq!(p.itl_context_ms, 0.0);
    }
}
