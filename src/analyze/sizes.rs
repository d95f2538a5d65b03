//! Request sizes as distributions (DESIGN §3): the prompt or output token counts of one traffic
//! class, discretized into fixed probability strata.
//!
//! Latency percentiles come from the size distribution as much as from queueing: at light load
//! the p90 TTFT is the prefill of the p90 prompt, not of the mean one. Every distribution here,
//! whatever it was built from (a mean, percentiles, a Prometheus histogram, samples), is held the
//! same way: the conditional mean of each of [`STRATA`] strata of fixed probability, finer in the
//! upper tail (the last stratum is the top 0.1 %), plus the quantile function at the strata's
//! edges. The strata are the same for every distribution, so the value is `Copy` and cheap.
//!
//! Where only a mean is known the form is **lognormal with a coefficient of variation of 1**
//! ([`DEFAULT_CV`]): heavy-tailed on purpose (public LLM traces have CV 0.5–2), so a plan made
//! without size information errs towards more capacity. `constant` is there for fixed-size
//! benchmark traffic.

use super::normal;

/// Number of probability strata.
pub const STRATA: usize = 16;

/// Upper quantile level of each stratum; stratum j covers (UPPER[j−1], UPPER[j]] (0 below the first).
pub const STRATUM_UPPER: [f64; STRATA] =
    [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0];

/// The coefficient of variation assumed when only a mean is given.
pub const DEFAULT_CV: f64 = 1.0;

/// Unbounded tails are cut at this quantile level for the edge values (not for the means).
const TOP_LEVEL: f64 = 0.9999;

/// Probability of stratum j.
pub fn stratum_weight(j: usize) -> f64 {
    STRATUM_UPPER[j] - if j == 0 { 0.0 } else { STRATUM_UPPER[j - 1] }
}

/// A distribution of token counts per request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SizeDistribution {
    /// E[X | X in stratum j], non-decreasing in j.
    means: [f64; STRATA],
    /// The quantile function at level 0 and at each stratum's upper edge (the last at
    /// [`TOP_LEVEL`] for an unbounded tail): `edges[0]` is level 0, `edges[j + 1]` is
    /// `STRATUM_UPPER[j]`.
    edges: [f64; STRATA + 1],
}

/// The shapes a distribution can be given with a mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// Every request has the mean.
    Constant,
    /// Lognormal with this coefficient of variation (std / mean).
    Lognormal { cv: f64 },
    /// Exponential (CV 1, light upper tail compared with the lognormal).
    Exponential,
    /// Uniform on [mean·(1 − spread), mean·(1 + spread)], spread in [0, 1].
    Uniform { spread: f64 },
}

/// Why a distribution could not be built; the message names what was wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SizeError(pub String);

impl SizeDistribution {
    /// Every request of `tokens` tokens.
    pub fn constant(tokens: f64) -> Self {
        Self { means: [tokens; STRATA], edges: [tokens; STRATA + 1] }
    }

    /// The documented default for a class known only by its mean: lognormal, CV [`DEFAULT_CV`].
    pub fn from_mean(mean: f64) -> Self {
        Self::with_shape(mean, Shape::Lognormal { cv: DEFAULT_CV })
    }

    /// A distribution of the given shape and mean (mean > 0; shape parameters validated by the caller).
    pub fn with_shape(mean: f64, shape: Shape) -> Self {
        match shape {
            Shape::Constant => Self::constant(mean),
            Shape::Lognormal { cv } if cv <= 0.0 => Self::constant(mean),
            Shape::Lognormal { cv } => {
                let sigma = (1.0 + cv * cv).ln().sqrt();
                Self::lognormal(mean.ln() - sigma * sigma / 2.0, sigma)
            }
            Shape::Exponential => Self::from_quantile_fn(|q| -mean * (1.0 - q).ln(), f64::INFINITY),
            Shape::Uniform { spread } => {
                let spread = spread.clamp(0.0, 1.0);
                Self::from_quantile_fn(|q| mean * (1.0 - spread + 2.0 * spread * q), mean * (1.0 + spread))
            }
        }
    }

    /// Lognormal with log-mean μ and log-sd σ, strata means in closed form:
    /// E[X | a < F(X) ≤ b] = e^{μ+σ²/2}·(Φ(z_b − σ) − Φ(z_a − σ)) / (b − a).
    fn lognormal(mu: f64, sigma: f64) -> Self {
        let mean = (mu + sigma * sigma / 2.0).exp();
        let mut means = [0.0; STRATA];
        let mut edges = [0.0; STRATA + 1];
        let mut lower = 0.0;
        let mut z_lower = f64::NEG_INFINITY;
        for j in 0..STRATA {
            let upper = STRATUM_UPPER[j];
            let z_upper = normal::quantile(upper);
            let mass = normal::cdf(z_upper - sigma) - normal::cdf(z_lower - sigma);
            means[j] = mean * mass / (upper - lower);
            let edge_level = if j + 1 == STRATA { TOP_LEVEL } else { upper };
            edges[j + 1] = (mu + sigma * normal::quantile(edge_level)).exp();
            lower = upper;
            z_lower = z_upper;
        }
        Self::sorted(means, edges)
    }

    /// Discretize a non-decreasing quantile function (`top` = its value at level 1, may be ∞).
    fn from_quantile_fn(quantile: impl Fn(f64) -> f64, top: f64) -> Self {
        let mut means = [0.0; STRATA];
        let mut edges = [0.0; STRATA + 1];
        edges[0] = quantile(0.0);
        let mut lower = 0.0;
        for j in 0..STRATA {
            let upper = STRATUM_UPPER[j];
            means[j] = if j + 1 == STRATA && !top.is_finite() {
                upper_tail_mean(&quantile, lower)
            } else {
                simpson(&quantile, lower, upper) / (upper - lower)
            };
            edges[j + 1] = if j + 1 != STRATA {
                quantile(upper)
            } else if top.is_finite() {
                top
            } else {
                quantile(TOP_LEVEL)
            };
            lower = upper;
        }
        Self::sorted(means, edges)
    }

    fn sorted(mut means: [f64; STRATA], mut edges: [f64; STRATA + 1]) -> Self {
        // Rounding can break monotonicity by an ulp; the model relies on it.
        for j in 1..STRATA {
            means[j] = means[j].max(means[j - 1]);
        }
        for j in 1..=STRATA {
            edges[j] = edges[j].max(edges[j - 1]);
        }
        Self { means, edges }
    }

    /// From percentiles `(level, tokens)` (levels in (0, 1), increasing; values non-decreasing),
    /// optionally a mean and a maximum. Inside the given levels the quantile function is linear
    /// between them; outside it follows the lognormal that best fits them (and the mean, which it
    /// matches exactly when given), scaled to meet the outermost percentiles; `max` caps it.
    /// Returns the distribution and a note when the given mean cannot be reached with the given
    /// percentiles (off by more than 10 %).
    pub fn from_percentiles(
        mean: Option<f64>,
        points: &[(f64, f64)],
        max: Option<f64>,
    ) -> Result<(Self, Option<String>), SizeError> {
        if points.is_empty() {
            return Err(SizeError("needs at least one percentile".into()));
        }
        for w in points.windows(2) {
            if w[1].0 <= w[0].0 {
                return Err(SizeError(format!("percentile levels must increase, got {} after {}", w[1].0, w[0].0)));
            }
            if w[1].1 < w[0].1 {
                return Err(SizeError(format!(
                    "percentiles must not decrease: p{} = {} is below p{} = {}",
                    level_name(w[1].0),
                    w[1].1,
                    level_name(w[0].0),
                    w[0].1
                )));
            }
        }
        if let Some(m) = max
            && let Some(&(q, v)) = points.last()
            && v > m
        {
            return Err(SizeError(format!("p{} = {v} is above max {m}", level_name(q))));
        }
        let (mu, sigma) = fit_lognormal(mean, points)
            .ok_or_else(|| SizeError("no lognormal matches these percentiles and mean".into()))?;
        let ln_quantile = |q: f64| (mu + sigma * normal::quantile(q)).exp();
        let (q_first, v_first) = points[0];
        let (q_last, v_last) = points[points.len() - 1];
        let below = v_first / ln_quantile(q_first);
        let above = v_last / ln_quantile(q_last);
        let cap = max.unwrap_or(f64::INFINITY);
        let quantile = |q: f64| -> f64 {
            let v = if q <= q_first {
                below * ln_quantile(q)
            } else if q >= q_last {
                above * ln_quantile(q)
            } else {
                let i = points.partition_point(|&(level, _)| level < q);
                let (q0, v0) = points[i - 1];
                let (q1, v1) = points[i];
                v0 + (v1 - v0) * (q - q0) / (q1 - q0)
            };
            v.min(cap)
        };
        let dist = Self::from_quantile_fn(quantile, cap);
        let note = mean.and_then(|m| {
            let got = dist.mean();
            ((got - m).abs() > 0.1 * m).then(|| {
                format!("the percentiles imply a mean of {got:.1} tokens, not the {m} given; the percentiles are used")
            })
        });
        Ok((dist, note))
    }

    /// From a Prometheus histogram: `(upper bound, cumulative count)` for the finite buckets in
    /// ascending order, the total count (the `+Inf` bucket) and, when known, the sum. Inside a
    /// bucket values are taken as uniform; the `+Inf` bucket gets a uniform tail whose mean makes
    /// the sum come out (twice the last bound when the sum is not known).
    pub fn from_histogram(buckets: &[(f64, f64)], count: f64, sum: Option<f64>) -> Result<Self, SizeError> {
        if !(count.is_finite() && count > 0.0) {
            return Err(SizeError(format!("histogram has no observations (count {count})")));
        }
        let mut knots = vec![(0.0, 0.0)];
        let mut finite_sum = 0.0;
        let (mut last_le, mut last_cum) = (0.0, 0.0);
        for (i, &(le, cum)) in buckets.iter().enumerate() {
            if !le.is_finite() || le < 0.0 || (i > 0 && le <= last_le) {
                return Err(SizeError(format!(
                    "bucket bounds must be finite, ≥ 0 and increasing, got {le} after {last_le}"
                )));
            }
            if !(cum.is_finite() && cum >= last_cum && cum <= count) {
                return Err(SizeError(format!(
                    "cumulative counts must be non-decreasing and at most the count {count}, got {cum} at le {le}"
                )));
            }
            // Uniform inside (last_le, le]: the quantile runs linearly from the previous knot;
            // an empty bucket is a jump at the same level.
            finite_sum += (cum - last_cum) * (le + last_le) / 2.0;
            knots.push((cum / count, le));
            last_le = le;
            last_cum = cum;
        }
        let tail_count = count - last_cum;
        if tail_count > 0.0 {
            let tail_mean = match sum {
                Some(s) if s.is_finite() && s > finite_sum => ((s - finite_sum) / tail_count).max(last_le),
                _ => 1.5 * last_le.max(1.0),
            };
            // Uniform on [last_le, 2·tail_mean − last_le] has mean tail_mean.
            knots.push((1.0, 2.0 * tail_mean - last_le));
        }
        let top = knots.last().map_or(0.0, |k| k.1);
        Ok(Self::from_quantile_fn(|q| piecewise_linear(&knots, q), top))
    }

    /// From observed sizes (any order; at least one).
    pub fn from_samples(samples: &[f64]) -> Result<Self, SizeError> {
        if samples.is_empty() {
            return Err(SizeError("no samples".into()));
        }
        if let Some(bad) = samples.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(SizeError(format!("sizes must be finite and ≥ 0, got {bad}")));
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        // The empirical quantile function, linear between order statistics.
        let quantile = |q: f64| {
            let x = q * (n - 1.0);
            let i = (x.floor() as usize).min(sorted.len() - 1);
            let j = (i + 1).min(sorted.len() - 1);
            sorted[i] + (sorted[j] - sorted[i]) * (x - i as f64)
        };
        let top = sorted[sorted.len() - 1];
        let mut dist = Self::from_quantile_fn(quantile, top);
        // Keep the sample mean exactly: the linear interpolation shifts it slightly.
        let want = sorted.iter().sum::<f64>() / n;
        let got = dist.mean();
        if got > 0.0 {
            for m in &mut dist.means {
                *m *= want / got;
            }
        }
        Ok(dist)
    }

    /// The mixture of distributions with these weights (a replica serving several classes):
    /// every stratum of every component becomes an atom, and the strata are re-cut from them.
    pub fn mixture(components: &[(f64, SizeDistribution)]) -> Self {
        let total: f64 = components.iter().map(|(w, _)| w.max(0.0)).sum();
        if components.len() == 1 || total <= 0.0 {
            return components.first().map_or(Self::constant(1.0), |c| c.1);
        }
        let mut atoms: Vec<(f64, f64)> = components
            .iter()
            .flat_map(|(w, d)| d.strata().map(move |(p, v)| (v, p * w.max(0.0) / total)))
            .filter(|a| a.1 > 0.0)
            .collect();
        atoms.sort_by(|a, b| a.0.total_cmp(&b.0));
        let lowest = components.iter().map(|(_, d)| d.edges[0]).fold(f64::INFINITY, f64::min);
        let highest = components.iter().map(|(_, d)| d.edges[STRATA]).fold(0.0, f64::max);
        // Conditional mean of the atoms over each stratum's level interval, splitting atoms at
        // the boundaries; the edges are the atoms' quantiles.
        let mut means = [0.0; STRATA];
        let mut edges = [0.0; STRATA + 1];
        edges[0] = lowest;
        let (mut i, mut used) = (0usize, 0.0); // atom index and the part of it already taken
        let mut level = 0.0;
        for j in 0..STRATA {
            let upper = STRATUM_UPPER[j];
            let want = upper - level;
            let (mut got, mut sum) = (0.0, 0.0);
            while got < want - 1e-15 && i < atoms.len() {
                let (v, p) = atoms[i];
                let take = (p - used).min(want - got);
                got += take;
                sum += take * v;
                used += take;
                if used >= p - 1e-15 {
                    i += 1;
                    used = 0.0;
                }
            }
            means[j] = if got > 0.0 { sum / got } else { atoms.last().map_or(0.0, |a| a.0) };
            edges[j + 1] = if j + 1 == STRATA { highest } else { atoms.get(i).map_or(highest, |a| a.0) };
            level = upper;
        }
        Self::sorted(means, edges)
    }

    /// E[X].
    pub fn mean(&self) -> f64 {
        self.means.iter().enumerate().map(|(j, m)| stratum_weight(j) * m).sum()
    }

    /// E[X²] over the strata means (the spread inside a stratum is left out).
    pub fn second_moment(&self) -> f64 {
        self.means.iter().enumerate().map(|(j, m)| stratum_weight(j) * m * m).sum()
    }

    /// E[g(X)] over the strata.
    pub fn expect(&self, g: impl Fn(f64) -> f64) -> f64 {
        self.means.iter().enumerate().map(|(j, &m)| stratum_weight(j) * g(m)).sum()
    }

    /// The strata as (probability, conditional mean), lowest first.
    pub fn strata(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.means.iter().enumerate().map(|(j, &m)| (stratum_weight(j), m))
    }

    /// The q-quantile, linear between the strata edges.
    pub fn quantile(&self, q: f64) -> f64 {
        let q = q.clamp(0.0, 1.0);
        let mut lower = 0.0;
        for (j, &upper) in STRATUM_UPPER.iter().enumerate() {
            if q <= upper {
                let t = (q - lower) / (upper - lower);
                return self.edges[j] + t * (self.edges[j + 1] - self.edges[j]);
            }
            lower = upper;
        }
        self.edges[STRATA]
    }

    /// The largest value considered (the top edge).
    pub fn max(&self) -> f64 {
        self.edges[STRATA]
    }

    /// Whether every request has the same size.
    pub fn is_constant(&self) -> bool {
        self.edges[0] == self.edges[STRATA]
    }

    /// The same distribution with every size multiplied by `factor` (> 0).
    pub fn scaled(&self, factor: f64) -> Self {
        Self { means: self.means.map(|m| m * factor), edges: self.edges.map(|e| e * factor) }
    }

    /// The same distribution with every size at least `floor` (a request has ≥ 1 token).
    pub fn at_least(&self, floor: f64) -> Self {
        Self { means: self.means.map(|m| m.max(floor)), edges: self.edges.map(|e| e.max(floor)) }
    }
}

/// "50", "90", "99.9": a level as percentile names write it.
fn level_name(q: f64) -> String {
    let p = q * 100.0;
    if (p - p.round()).abs() < 1e-9 { format!("{}", p.round()) } else { format!("{p}") }
}

/// Linear interpolation through knots (level, value) with levels 0 … 1 ascending.
fn piecewise_linear(knots: &[(f64, f64)], q: f64) -> f64 {
    let i = knots.partition_point(|&(level, _)| level < q).clamp(1, knots.len() - 1);
    let (q0, v0) = knots[i - 1];
    let (q1, v1) = knots[i];
    if q1 <= q0 { v1 } else { v0 + (v1 - v0) * ((q - q0) / (q1 - q0)).clamp(0.0, 1.0) }
}

/// ∫_a^b f by composite Simpson on 32 intervals (the quantile functions here are smooth or
/// piecewise linear within a stratum).
fn simpson(f: &impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    const N: usize = 32;
    let h = (b - a) / N as f64;
    let mut sum = f(a) + f(b);
    for i in 1..N {
        let x = a + h * i as f64;
        sum += if i % 2 == 1 { 4.0 } else { 2.0 } * f(x);
    }
    sum * h / 3.0
}

/// E[X | F(X) > a] for a quantile function that may be unbounded at 1: substituting
/// q = 1 − (1 − a)·e^{−s} gives ∫_0^∞ Q(1 − (1 − a)e^{−s}) e^{−s} ds, cut where e^{−s} < 1e-9.
fn upper_tail_mean(quantile: &impl Fn(f64) -> f64, a: f64) -> f64 {
    let g = |s: f64| quantile(1.0 - (1.0 - a) * (-s).exp()) * (-s).exp();
    simpson(&g, 0.0, 20.0) + simpson(&g, 20.0, 21.0)
}

/// The lognormal (μ, σ) that best fits percentiles in log space, through the mean exactly when
/// one is given (μ = ln mean − σ²/2); σ by golden-section search on [0, 4].
fn fit_lognormal(mean: Option<f64>, points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let zs: Vec<(f64, f64)> = points.iter().map(|&(q, v)| (normal::quantile(q), v.max(1e-9).ln())).collect();
    let mu_for = |sigma: f64| -> f64 {
        match mean {
            Some(m) => m.ln() - sigma * sigma / 2.0,
            // Least squares for μ at fixed σ: the mean residual.
            None => zs.iter().map(|(z, lv)| lv - sigma * z).sum::<f64>() / zs.len() as f64,
        }
    };
    let loss = |sigma: f64| -> f64 {
        let mu = mu_for(sigma);
        zs.iter().map(|(z, lv)| (lv - mu - sigma * z).powi(2)).sum()
    };
    let sigma = if zs.len() == 1 && mean.is_none() {
        // One percentile and no mean: the default spread through that point.
        (1.0 + DEFAULT_CV * DEFAULT_CV).ln().sqrt()
    } else {
        golden_section(loss, 0.0, 4.0)
    };
    let mu = mu_for(sigma);
    (mu.is_finite() && sigma.is_finite()).then_some((mu, sigma))
}

fn golden_section(f: impl Fn(f64) -> f64, mut lo: f64, mut hi: f64) -> f64 {
    let ratio = (5.0_f64.sqrt() - 1.0) / 2.0;
    let mut a = hi - ratio * (hi - lo);
    let mut b = lo + ratio * (hi - lo);
    let (mut fa, mut fb) = (f(a), f(b));
    for _ in 0..100 {
        if fa < fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - ratio * (hi - lo);
            fa = f(a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + ratio * (hi - lo);
            fb = f(b);
        }
    }
    (lo + hi) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_rel(got: f64, want: f64, tol: f64) {
        assert!(((got - want) / want).abs() <= tol, "got {got}, want {want} (tol {tol})");
    }

    #[test]
    fn strata_weights_sum_to_one() {
        let total: f64 = (0..STRATA).map(stratum_weight).sum();
        assert_rel(total, 1.0, 1e-12);
    }

    #[test]
    fn a_constant_is_its_mean_everywhere() {
        let d = SizeDistribution::constant(512.0);
        assert_eq!(d.mean(), 512.0);
        assert_eq!(d.quantile(0.9), 512.0);
        assert!(d.is_constant());
        assert_rel(d.second_moment(), 512.0 * 512.0, 1e-12);
    }

    #[test]
    fn lognormal_keeps_its_mean_and_tail() {
        // CV 1: σ² = ln 2, so E[X²] = 2·mean² and the median is mean/√2.
        let d = SizeDistribution::from_mean(1000.0);
        assert_rel(d.mean(), 1000.0, 1e-9);
        assert_rel(d.quantile(0.5), 1000.0 / 2.0_f64.sqrt(), 1e-9);
        // The strata means leave out the spread inside each stratum (mostly in the top one).
        assert!(d.second_moment() > 1.7e6 && d.second_moment() < 2.0e6, "{}", d.second_moment());
        assert!(d.quantile(0.99) > 4.0 * d.quantile(0.5));
        assert!(!d.is_constant());
    }

    #[test]
    fn uniform_and_exponential_shapes() {
        let u = SizeDistribution::with_shape(1000.0, Shape::Uniform { spread: 0.5 });
        assert_rel(u.mean(), 1000.0, 1e-9);
        assert_rel(u.quantile(0.9), 1400.0, 1e-9);
        assert_rel(u.max(), 1500.0, 1e-9);
        let e = SizeDistribution::with_shape(100.0, Shape::Exponential);
        assert_rel(e.mean(), 100.0, 1e-4);
        assert_rel(e.quantile(0.5), 100.0 * 2.0_f64.ln(), 1e-9);
    }

    #[test]
    fn percentiles_are_reproduced_and_the_mean_is_matched() {
        // Azure conversation outputs: mean 211, median 129, p90 ~480, max 1000.
        let (d, note) = SizeDistribution::from_percentiles(Some(211.0), &[(0.5, 129.0), (0.9, 480.0)], Some(1000.0))
            .expect("valid");
        assert_rel(d.quantile(0.5), 129.0, 1e-9);
        assert_rel(d.quantile(0.9), 480.0, 1e-9);
        assert!(d.max() <= 1000.0);
        assert!(note.is_none(), "{note:?}");
        assert_rel(d.mean(), 211.0, 0.1);
    }

    #[test]
    fn an_unreachable_mean_is_reported_not_hidden() {
        let (d, note) = SizeDistribution::from_percentiles(Some(5000.0), &[(0.5, 100.0), (0.99, 200.0)], Some(250.0))
            .expect("valid");
        assert!(d.mean() < 300.0);
        assert!(note.expect("a note").contains("not the 5000 given"));
    }

    #[test]
    fn bad_percentiles_are_refused_with_the_reason() {
        let err = SizeDistribution::from_percentiles(None, &[(0.5, 300.0), (0.9, 200.0)], None).unwrap_err();
        assert!(err.0.contains("p90 = 200 is below p50 = 300"), "{err}");
        let err = SizeDistribution::from_percentiles(None, &[(0.9, 300.0)], Some(100.0)).unwrap_err();
        assert!(err.0.contains("above max"), "{err}");
        assert!(SizeDistribution::from_percentiles(None, &[], None).is_err());
    }

    #[test]
    fn a_histogram_with_its_sum_keeps_the_mean() {
        // 100 requests: 50 in (0, 128], 40 in (128, 512], 10 above 512, sum 30,000.
        let d =
            SizeDistribution::from_histogram(&[(128.0, 50.0), (512.0, 90.0)], 100.0, Some(30_000.0)).expect("valid");
        assert_rel(d.mean(), 300.0, 0.02);
        assert_rel(d.quantile(0.5), 128.0, 1e-9);
        assert_rel(d.quantile(0.9), 512.0, 1e-9);
        assert!(SizeDistribution::from_histogram(&[(128.0, 50.0)], 0.0, None).is_err());
        assert!(SizeDistribution::from_histogram(&[(128.0, 50.0), (64.0, 60.0)], 100.0, None).is_err());
    }

    #[test]
    fn a_mixture_keeps_the_mean_and_puts_the_long_class_in_the_tail() {
        let short = SizeDistribution::constant(100.0);
        let long = SizeDistribution::constant(10_000.0);
        let mix = SizeDistribution::mixture(&[(3.0, short), (1.0, long)]);
        assert_rel(mix.mean(), 0.75 * 100.0 + 0.25 * 10_000.0, 1e-9);
        assert_rel(mix.quantile(0.5), 100.0, 1e-9);
        assert_rel(mix.quantile(0.9), 10_000.0, 1e-9);
        let one = SizeDistribution::mixture(&[(2.0, short)]);
        assert_eq!(one, short);
    }

    #[test]
    fn samples_keep_their_mean_and_order_statistics() {
        let samples: Vec<f64> = (1..=1000).map(f64::from).collect();
        let d = SizeDistribution::from_samples(&samples).expect("valid");
        assert_rel(d.mean(), 500.5, 1e-12);
        assert_rel(d.quantile(0.9), 900.1, 1e-3);
        assert!(SizeDistribution::from_samples(&[]).is_err());
        assert!(SizeDistribution::from_samples(&[1.0, f64::NAN]).is_err());
    }
}
