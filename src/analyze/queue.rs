//! The state-dependent batch queue of one replica (DESIGN §3).
//!
//! A replica batches at most B requests; with n requests present, min(n, B) are in service and
//! depart at rate μ(n) = min(n,B) / T(min(n,B)). Arrivals are Poisson(λ). The queue in front of
//! the batch is **unbounded**, as vLLM's is: a finite buffer (WVA's K = 11·B) blocks arrivals and
//! hides overload, so here λ ≥ μ(B) is simply unstable and [`ReplicaModel::analyze`] says so.
//!
//! The stationary distribution is p_n ∝ Π_{i≤n} λ/μ(i). Above B the ratio r = λ/μ(B) is
//! constant, so the tail is geometric and handled in closed form; the head (n ≤ B) is computed
//! in log space because the products overflow for large B at high λ.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{LatencyParams, Role, Statistic};

/// Floor on any time used as a divisor (ms): a fit may legitimately give a zero time (γ = δ = 0
/// with one output token) and rates must stay finite.
const MIN_TIME_MS: f64 = 1e-9;

/// Quantile levels of [`Statistic`], ascending; [`ReplicaModel::analyze`] computes all of them
/// in one pass over the chain.
const LEVELS: [f64; 4] = [0.50, 0.90, 0.95, 0.99];

/// Mean tokens per request of a traffic class.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workload {
    /// I: mean prompt tokens per request.
    pub input_tokens: f64,
    /// O: mean generated tokens per request (the first one comes from prefill).
    pub output_tokens: f64,
}

impl Workload {
    /// L = I + O/2: the mean context length over a request's decode (DESIGN §3).
    pub fn mean_context_tokens(&self) -> f64 {
        self.input_tokens + self.output_tokens / 2.0
    }
}

/// One replica of a variant serving one workload: latency model plus batch queue.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaModel {
    params: LatencyParams,
    max_batch: u32,
    role: Role,
    workload: Workload,
    /// Σ_{i=1..n} ln μ(i) for n = 0..=B, μ in req/s: λ-independent, so `analyze` only adds
    /// n·ln λ per state.
    log_rate_prefix: Vec<f64>,
}

impl ReplicaModel {
    /// A `max_batch` of 0 is treated as 1 (upstream validation forbids it).
    pub fn new(params: LatencyParams, max_batch: u32, role: Role, workload: Workload) -> Self {
        let mut model = Self { params, max_batch: max_batch.max(1), role, workload, log_rate_prefix: Vec::new() };
        let mut prefix = Vec::with_capacity(model.max_batch as usize + 1);
        let mut sum = 0.0;
        prefix.push(sum);
        for n in 1..=model.max_batch {
            sum += model.rate_rps(n).ln();
            prefix.push(sum);
        }
        model.log_rate_prefix = prefix;
        model
    }

    pub fn params(&self) -> &LatencyParams {
        &self.params
    }

    pub fn max_batch(&self) -> u32 {
        self.max_batch
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// ITL(n) = α + β·n + η·n·L (DESIGN §3): one decode step with n requests in the batch.
    pub fn itl_ms(&self, n: f64) -> f64 {
        let p = &self.params;
        p.alpha_ms + p.beta_ms * n + p.itl_context_ms * n * self.workload.mean_context_tokens()
    }

    /// prefill(n) = γ + δ·I·n + ε·I²·n (DESIGN §3): a prompt's prefill with n in the batch.
    pub fn prefill_ms(&self, n: f64) -> f64 {
        let p = &self.params;
        let i = self.workload.input_tokens;
        p.gamma_ms + p.delta_ms * i * n + p.prefill_quadratic_ms * i * i * n
    }

    /// Mean duration of a decode step with n requests in the batch, as a request experiences it.
    ///
    /// Under continuous batching (`Both`) the other n − 1 requests' prompts are prefilled in the
    /// steps this request decodes in: each of them stalls it once by δ·I + ε·I² over its O − 1
    /// steps, so the mean step is ITL(n) + (δ·I + ε·I²)·(n − 1)/(O − 1). This keeps T(n) exact:
    /// prefill(1) + (O − 1)·step(n) = T(n). Decode replicas never prefill: step(n) = ITL(n).
    pub fn decode_step_ms(&self, n: f64) -> f64 {
        match self.role {
            Role::Both => {
                let per_prompt = self.prefill_ms(1.0) - self.params.gamma_ms;
                let steps = (self.workload.output_tokens - 1.0).max(1.0);
                self.itl_ms(n) + per_prompt.max(0.0) * (n - 1.0).max(0.0) / steps
            }
            Role::Prefill | Role::Decode => self.itl_ms(n),
        }
    }

    /// Time from admission to the first token for a request that finds n others in service.
    ///
    /// `Both` (continuous batching): the running step ends (half a step on average), then one
    /// step prefills the prompt alone and decodes the others: prefill(1) + ITL(n) + step(n)/2.
    /// `Prefill` replicas batch the prompts they hold: prefill(n + 1).
    fn first_token_ms(&self, n: usize) -> f64 {
        let n_f = n as f64;
        match self.role {
            Role::Both if n == 0 => self.prefill_ms(1.0),
            Role::Both => self.prefill_ms(1.0) + self.itl_ms(n_f) + 0.5 * self.decode_step_ms(n_f),
            Role::Prefill | Role::Decode => self.prefill_ms(n_f + 1.0),
        }
    }

    /// T(n): the time one request occupies a batch slot at concurrency n (DESIGN §3).
    ///
    /// `Both`: prefill(n) + (O−1)·ITL(n). `Prefill`: prefill(n) only. `Decode`:
    /// max(O−1, 1)·ITL(n), since its first token came from the prefill replica.
    pub fn service_time_ms(&self, n: u32) -> f64 {
        let n = f64::from(n);
        let decode_steps = self.workload.output_tokens - 1.0;
        match self.role {
            Role::Both => self.prefill_ms(n) + decode_steps.max(0.0) * self.itl_ms(n),
            Role::Prefill => self.prefill_ms(n),
            Role::Decode => decode_steps.max(1.0) * self.itl_ms(n),
        }
    }

    /// μ(n) = n / T(n) in req/s, for 1 ≤ n ≤ B.
    fn rate_rps(&self, n: u32) -> f64 {
        1000.0 * f64::from(n) / self.service_time_ms(n).max(MIN_TIME_MS)
    }

    /// μ(B) = 1000·B / T(B): the throughput of a full batch, the most the replica can sustain.
    pub fn saturation_rps(&self) -> f64 {
        self.rate_rps(self.max_batch)
    }

    /// ln of the unnormalised p_n = Π_{i≤n} λ/μ(i), 0 ≤ n ≤ B.
    fn log_weight(&self, n: usize, ln_lambda: f64) -> f64 {
        n as f64 * ln_lambda - self.log_rate_prefix[n]
    }

    /// Decode step used as a divisor in token weights.
    fn itl_divisor_ms(&self, n: usize) -> f64 {
        self.decode_step_ms(n as f64).max(MIN_TIME_MS)
    }

    /// Steady state at `arrival_rps`; `None` when λ is negative, not finite, or ≥ μ(B) (the
    /// unbounded queue has no steady state there).
    pub fn analyze(&self, arrival_rps: f64) -> Option<QueueMetrics> {
        self.analyze_with(arrival_rps, false)
    }

    /// `general` forces the slower quantile path that makes no ordering assumption, so tests
    /// can check the fast path against it.
    fn analyze_with(&self, arrival_rps: f64, general: bool) -> Option<QueueMetrics> {
        let lambda = arrival_rps;
        let mu_b = self.saturation_rps();
        if !lambda.is_finite() || lambda < 0.0 || lambda >= mu_b {
            return None;
        }
        if lambda == 0.0 {
            return Some(self.idle_metrics(mu_b));
        }
        let b = self.max_batch as usize;
        let b_f = f64::from(self.max_batch);
        let ln_lambda = lambda.ln();
        // Rescale by the largest head weight; tail weights w_B·r^k never exceed w_B.
        let shift = (0..=b).map(|n| self.log_weight(n, ln_lambda)).fold(f64::NEG_INFINITY, f64::max);
        let weight = |n: usize| (self.log_weight(n, ln_lambda) - shift).exp();

        // Head sums over n < B, unnormalised.
        let (mut z_head, mut busy_head, mut prefill_head) = (0.0, 0.0, 0.0);
        let (mut tokens_head, mut itl_head) = (0.0, 0.0);
        for n in 0..b {
            let w = weight(n);
            let n_f = n as f64;
            z_head += w;
            busy_head += n_f * w;
            prefill_head += w * self.first_token_ms(n);
            // Token share of state n ∝ p_n·n/step(n): n tokens per step.
            let tokens = w * n_f / self.itl_divisor_ms(n);
            tokens_head += tokens;
            itl_head += tokens * self.decode_step_ms(n_f);
        }
        let headroom_rps = mu_b - lambda; // μ(B)·(1 − r), > 0 here
        let r = lambda / mu_b;
        let w_b = weight(b);
        // Σ_{n≥B} w_B·r^{n−B} = w_B / (1 − r).
        let tail = w_b * mu_b / headroom_rps;
        let z = z_head + tail;
        let p_b = w_b / z;
        let wait_probability = tail / z;
        let one_minus_r = headroom_rps / mu_b;
        // Σ_{n≥B} (n−B)·p_B·r^{n−B} = p_B·r / (1 − r)².
        let mean_queue_len = p_b * r / (one_minus_r * one_minus_r);
        let wait = WaitTail { probability: wait_probability, rate_per_ms: headroom_rps / 1000.0 };
        let mean_in_service = (busy_head + b_f * tail) / z;
        // Little: W = L_q / λ.
        let mean_wait_ms = 1000.0 * mean_queue_len / lambda;

        let ttft = match self.role {
            // The decode replica's "TTFT" is its queueing delay before the 2nd token.
            Role::Decode => LatencyStats::from_fn(mean_wait_ms, |q| wait.quantile_ms(q)),
            Role::Both | Role::Prefill => {
                // A request that waited is admitted as a slot frees, next to B − 1 others.
                let prefill_b = self.first_token_ms(b - 1);
                let mean = (prefill_head + tail * prefill_b) / z + mean_wait_ms;
                let ordered = (1..b).all(|n| self.first_token_ms(n) >= self.first_token_ms(n - 1));
                let quantiles = if general || !ordered {
                    let atoms = (0..b).map(|n| (self.first_token_ms(n), weight(n) / z)).collect();
                    let mixture = Mixture { atoms, tail_start_ms: prefill_b, tail: wait };
                    LEVELS.map(|q| mixture.quantile(q))
                } else {
                    // Atoms are non-decreasing in n and all lie at or below the waiting part's
                    // start: levels the head covers are atoms, the rest are in the exponential
                    // tail.
                    let mut out = LEVELS.map(|q| prefill_b + wait.quantile_ms(q));
                    walk_atoms(0..b, weight, |n| self.first_token_ms(n), z_head, z, &mut out);
                    out
                };
                LatencyStats::new(mean, quantiles)
            }
        };

        let itl = match self.role {
            Role::Prefill => LatencyStats::zero(),
            Role::Both | Role::Decode => {
                let itl_b = self.decode_step_ms(b_f);
                let tokens_tail = tail * b_f / self.itl_divisor_ms(b);
                let tokens = tokens_head + tokens_tail;
                if tokens.is_nan() || tokens <= 0.0 {
                    // λ so small that no busy state is representable: the λ → 0⁺ limit.
                    return Some(QueueMetrics { arrival_rps: lambda, ..self.idle_metrics(mu_b) });
                }
                let mean = (itl_head + tokens_tail * itl_b) / tokens;
                let token_weight = |n: usize| weight(n) * n as f64 / self.itl_divisor_ms(n);
                let slope = self.decode_step_ms(2.0) - self.decode_step_ms(1.0);
                let quantiles = if general || slope < 0.0 {
                    let mut atoms: Vec<(f64, f64)> =
                        (1..b).map(|n| (self.decode_step_ms(n as f64), token_weight(n) / tokens)).collect();
                    atoms.push((itl_b, tokens_tail / tokens));
                    let mixture = Mixture { atoms, tail_start_ms: itl_b, tail: WaitTail::NONE };
                    LEVELS.map(|q| mixture.quantile(q))
                } else {
                    // step(n) non-decreasing: levels past the head land on step(B).
                    let mut out = [itl_b; 4];
                    walk_atoms(1..b, token_weight, |n| self.decode_step_ms(n as f64), tokens_head, tokens, &mut out);
                    out
                };
                LatencyStats::new(mean, quantiles)
            }
        };

        Some(QueueMetrics {
            role: self.role,
            arrival_rps: lambda,
            saturation_rps: mu_b,
            utilization: r,
            mean_in_service,
            mean_queue_len,
            wait_probability,
            mean_wait_ms,
            ttft,
            itl,
        })
    }

    /// λ = 0: an arriving request is alone (the limit λ → 0⁺ of every metric).
    fn idle_metrics(&self, mu_b: f64) -> QueueMetrics {
        let ttft = match self.role {
            Role::Decode => LatencyStats::zero(),
            Role::Both | Role::Prefill => LatencyStats::constant(self.prefill_ms(1.0)),
        };
        let itl = match self.role {
            Role::Prefill => LatencyStats::zero(),
            Role::Both | Role::Decode => LatencyStats::constant(self.itl_ms(1.0)),
        };
        QueueMetrics {
            role: self.role,
            arrival_rps: 0.0,
            saturation_rps: mu_b,
            utilization: 0.0,
            mean_in_service: 0.0,
            mean_queue_len: 0.0,
            wait_probability: 0.0,
            mean_wait_ms: 0.0,
            ttft,
            itl,
        }
    }
}

/// Fills `out[k]` for the levels whose quantile lies among atoms `value(n)` (non-decreasing in
/// n) with unnormalised `mass(n)` summing to `head` out of `total`; other entries are left as
/// they are. The quantile is the smallest value whose cumulative mass reaches q·total.
fn walk_atoms(
    range: std::ops::Range<usize>,
    mass: impl Fn(usize) -> f64,
    value: impl Fn(usize) -> f64,
    head: f64,
    total: f64,
    out: &mut [f64; 4],
) {
    // Levels are ascending, so those inside the head are a prefix.
    let inside = LEVELS.iter().take_while(|&&q| head >= q * total).count();
    let mut k = 0;
    let mut cumulative = 0.0;
    let mut last = None;
    for n in range {
        if k == inside {
            return;
        }
        cumulative += mass(n);
        last = Some(n);
        while k < inside && cumulative >= LEVELS[k] * total {
            out[k] = value(n);
            k += 1;
        }
    }
    // Rounding can leave the running sum a hair below `head`: such levels sit on the last atom.
    if let Some(n) = last {
        for slot in out.iter_mut().take(inside).skip(k) {
            *slot = value(n);
        }
    }
}

/// The waiting part of the delay: with probability `probability` an arrival finds n ≥ B and
/// waits for n−B+1 departures at rate μ(B). Mixing Erlang(n−B+1, μ(B)) over the geometric
/// tail gives exactly Exponential(μ(B)·(1 − r)), so P(W > t) = P(wait)·e^{−μ(B)(1−r)t}.
#[derive(Clone, Copy, Debug, PartialEq)]
struct WaitTail {
    probability: f64,
    rate_per_ms: f64,
}

impl WaitTail {
    const NONE: WaitTail = WaitTail { probability: 0.0, rate_per_ms: 1.0 };

    /// Smallest t with P(W ≤ t) ≥ q: 0 when waits are rarer than 1 − q, else the solution of
    /// P(wait)·e^{−θt} = 1 − q.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.probability <= 1.0 - q || self.rate_per_ms <= 0.0 {
            return 0.0;
        }
        (self.probability / (1.0 - q)).ln() / self.rate_per_ms
    }

    /// P(0 < W ≤ t), the waiting part of the CDF.
    fn cdf(&self, t_ms: f64) -> f64 {
        if t_ms <= 0.0 {
            return 0.0;
        }
        -self.probability * (-self.rate_per_ms * t_ms).exp_m1()
    }
}

/// Atoms (value, probability) plus a waiting tail starting at `tail_start_ms`: a general
/// distribution whose quantiles are found by bisection on the CDF, with no assumption about
/// the atoms' order (used when a negative fitted slope breaks the fast path).
struct Mixture {
    atoms: Vec<(f64, f64)>,
    tail_start_ms: f64,
    tail: WaitTail,
}

impl Mixture {
    fn cdf(&self, t_ms: f64) -> f64 {
        let atoms: f64 = self.atoms.iter().filter(|(value, _)| *value <= t_ms).map(|(_, p)| p).sum();
        atoms + self.tail.cdf(t_ms - self.tail_start_ms)
    }

    /// Smallest t with CDF(t) ≥ q, to ~1e-12 relative.
    fn quantile(&self, q: f64) -> f64 {
        let lowest = self.atoms.iter().map(|(value, _)| *value).fold(self.tail_start_ms, f64::min);
        let highest =
            self.atoms.iter().map(|(value, _)| *value).fold(self.tail_start_ms + self.tail.quantile_ms(q), f64::max);
        let mut lo = lowest - 1.0 - lowest.abs(); // CDF(lo) = 0 < q
        let mut hi = highest + 1e-9 * highest.abs().max(1.0); // CDF(hi) ≥ q, with slack
        for _ in 0..400 {
            if hi - lo <= 1e-12 * hi.abs().max(1e-12) {
                break;
            }
            let mid = 0.5 * (lo + hi);
            if self.cdf(mid) >= q {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        // The CDF jumps at atoms: when one lies in the final bracket, it is the exact answer.
        self.atoms
            .iter()
            .map(|(value, _)| *value)
            .filter(|&value| lo < value && value <= hi && self.cdf(value) >= q)
            .fold(hi, f64::min)
    }
}

/// Mean and quantiles of one latency, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
pub struct LatencyStats {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl LatencyStats {
    fn new(mean_ms: f64, [p50_ms, p90_ms, p95_ms, p99_ms]: [f64; 4]) -> Self {
        Self { mean_ms, p50_ms, p90_ms, p95_ms, p99_ms }
    }

    fn from_fn(mean_ms: f64, quantile: impl Fn(f64) -> f64) -> Self {
        Self::new(mean_ms, LEVELS.map(quantile))
    }

    fn constant(ms: f64) -> Self {
        Self::new(ms, [ms; 4])
    }

    fn zero() -> Self {
        Self::constant(0.0)
    }

    pub fn get(&self, statistic: Statistic) -> f64 {
        match statistic {
            Statistic::Mean => self.mean_ms,
            Statistic::P50 => self.p50_ms,
            Statistic::P90 => self.p90_ms,
            Statistic::P95 => self.p95_ms,
            Statistic::P99 => self.p99_ms,
        }
    }
}

/// Steady state of one replica at one arrival rate (exact under the chain; PASTA: arrivals see
/// the stationary distribution, and nothing is blocked).
///
/// TTFT: an arrival finding n < B joins at once with batch n+1 (TTFT = prefill(n+1)); one
/// finding n ≥ B waits W and starts with batch B (TTFT = prefill(B) + W). For a `Decode`
/// replica, which does no prefill, `ttft` is the queueing delay W before its first decode step
/// (the request's 2nd token). ITL is token-weighted: state n makes min(n,B) tokens per step of
/// ITL(min(n,B)). A `Prefill` replica makes no decode tokens and reports ITL 0.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
pub struct QueueMetrics {
    pub role: Role,
    /// λ (req/s).
    pub arrival_rps: f64,
    /// μ(B) (req/s).
    pub saturation_rps: f64,
    /// λ / μ(B): the fraction of saturation throughput in use.
    pub utilization: f64,
    /// N_s = E[min(n, B)].
    pub mean_in_service: f64,
    /// L_q = E[max(n − B, 0)].
    pub mean_queue_len: f64,
    /// P(n ≥ B): the probability that an arrival queues.
    pub wait_probability: f64,
    /// W = L_q / λ (Little).
    pub mean_wait_ms: f64,
    pub ttft: LatencyStats,
    pub itl: LatencyStats,
}

impl QueueMetrics {
    pub fn ttft_ms(&self, statistic: Statistic) -> f64 {
        self.ttft.get(statistic)
    }

    pub fn itl_ms(&self, statistic: Statistic) -> f64 {
        self.itl.get(statistic)
    }

    pub fn mean_ttft_ms(&self) -> f64 {
        self.ttft.mean_ms
    }

    pub fn mean_itl_ms(&self) -> f64 {
        self.itl.mean_ms
    }

    /// The queueing delay W: its mean, or its quantile (0 when waits are rarer than 1 − q).
    pub fn wait_ms(&self, statistic: Statistic) -> f64 {
        match statistic.quantile() {
            None => self.mean_wait_ms,
            Some(q) => self.wait_tail().quantile_ms(q),
        }
    }

    /// Nothing is blocked or dropped, so the replica serves all it is offered.
    pub fn predicted_throughput_rps(&self) -> f64 {
        self.arrival_rps
    }

    fn wait_tail(&self) -> WaitTail {
        WaitTail { probability: self.wait_probability, rate_per_ms: (self.saturation_rps - self.arrival_rps) / 1000.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STATS: [Statistic; 5] = [Statistic::Mean, Statistic::P50, Statistic::P90, Statistic::P95, Statistic::P99];
    const QUANTILE_STATS: [Statistic; 4] = [Statistic::P50, Statistic::P90, Statistic::P95, Statistic::P99];

    fn params(alpha_ms: f64, beta_ms: f64, gamma_ms: f64, delta_ms: f64) -> LatencyParams {
        LatencyParams { alpha_ms, beta_ms, gamma_ms, delta_ms, prefill_quadratic_ms: 0.0, itl_context_ms: 0.0 }
    }

    fn workload(input_tokens: f64, output_tokens: f64) -> Workload {
        Workload { input_tokens, output_tokens }
    }

    fn assert_rel(actual: f64, expected: f64, tol: f64) {
        let scale = actual.abs().max(expected.abs()).max(1e-300);
        assert!(
            (actual - expected).abs() <= tol * scale,
            "{actual} vs {expected} (rel {:e})",
            (actual - expected).abs() / scale
        );
    }

    /// p_n for n = 0..=n_max by direct products, normalised over the truncated range: an
    /// independent check for moderate B and λ (it overflows where `analyze` must not).
    fn naive_distribution(model: &ReplicaModel, lambda: f64, n_max: usize) -> Vec<f64> {
        let b = model.max_batch();
        let mut p = vec![1.0];
        for n in 1..=n_max {
            let m = (n as u32).min(b);
            let mu_rps = 1000.0 * f64::from(m) / model.service_time_ms(m);
            p.push(p[n - 1] * lambda / mu_rps);
        }
        let z: f64 = p.iter().sum();
        p.iter().map(|x| x / z).collect()
    }

    /// P(W > t) = Σ_{n≥B} π_n·P(Erlang(n−B+1, μ(B)) > t) (DESIGN §3), summed term by term.
    fn naive_wait_survival(model: &ReplicaModel, p: &[f64], t_ms: f64) -> f64 {
        let b = model.max_batch() as usize;
        let x = model.saturation_rps() / 1000.0 * t_ms;
        // P(Erlang(k) > t) = Σ_{j<k} e^{−x} x^j / j!, grown one j per extra departure.
        let mut term = (-x).exp();
        let mut erlang_survival = term;
        let mut total = 0.0;
        for (k, pn) in p.iter().enumerate().skip(b) {
            if k > b {
                term *= x / (k - b) as f64;
                erlang_survival += term;
            }
            total += pn * erlang_survival;
        }
        total
    }

    /// P(TTFT ≤ t) from the truncated chain: atoms first_token(n) below B, first_token(B − 1)
    /// + Erlang wait above (any atom order).
    fn naive_ttft_cdf(model: &ReplicaModel, p: &[f64], t_ms: f64) -> f64 {
        let b = model.max_batch() as usize;
        let head: f64 = (0..b).filter(|&n| model.first_token_ms(n) <= t_ms).map(|n| p[n]).sum();
        let wait_t = t_ms - model.first_token_ms(b - 1);
        let waiting: f64 = p[b..].iter().sum();
        let wait_cdf = if wait_t < 0.0 { 0.0 } else { waiting - naive_wait_survival(model, p, wait_t) };
        head + wait_cdf
    }

    /// Erlang C by the stable Erlang B recursion: P(wait) in M/M/c with offered load a.
    fn erlang_c(c: u32, a: f64) -> f64 {
        let mut erlang_b = 1.0;
        for k in 1..=c {
            erlang_b = a * erlang_b / (f64::from(k) + a * erlang_b);
        }
        erlang_b / (1.0 - a / f64::from(c) * (1.0 - erlang_b))
    }

    fn mm1_model() -> ReplicaModel {
        // T = γ + (O−1)·α = 100 + 10·20 = 300 ms at every n: μ = 10/3 req/s.
        ReplicaModel::new(params(20.0, 0.0, 100.0, 0.0), 1, Role::Both, workload(500.0, 11.0))
    }

    #[test]
    fn one_slot_with_constant_service_is_mm1() {
        let model = mm1_model();
        let mu = 1000.0 / 300.0;
        assert_rel(model.saturation_rps(), mu, 1e-12);
        for rho in [0.01, 0.3, 0.75, 0.95, 0.999] {
            let lambda = rho * mu;
            let m = model.analyze(lambda).expect("stable");
            assert_rel(m.utilization, rho, 1e-12);
            assert_rel(m.wait_probability, rho, 1e-9);
            assert_rel(m.mean_in_service, rho, 1e-9);
            assert_rel(m.mean_queue_len, rho * rho / (1.0 - rho), 1e-9);
            let wait_ms = 1000.0 * rho / (mu - lambda);
            assert_rel(m.mean_wait_ms, wait_ms, 1e-9);
            assert_rel(m.mean_ttft_ms(), 100.0 + wait_ms, 1e-9);
            for s in QUANTILE_STATS {
                let q = s.quantile().expect("quantile");
                let expected = if rho > 1.0 - q { 1000.0 * (rho / (1.0 - q)).ln() / (mu * (1.0 - rho)) } else { 0.0 };
                assert_rel(m.wait_ms(s), expected, 1e-9);
                assert_rel(m.ttft_ms(s), 100.0 + expected, 1e-9);
            }
            // One request at a time: every token at ITL(1).
            for s in STATS {
                assert_rel(m.itl_ms(s), 20.0, 1e-12);
            }
        }
    }

    #[test]
    fn flat_latency_with_batch_c_is_mmc_erlang_c_even_at_b_4096() {
        for c in [2, 8, 64, 4096] {
            let model = ReplicaModel::new(params(25.0, 0.0, 80.0, 0.0), c, Role::Both, workload(1000.0, 101.0));
            let mu1 = 1000.0 / (80.0 + 100.0 * 25.0);
            assert_rel(model.saturation_rps(), f64::from(c) * mu1, 1e-12);
            for rho in [0.3, 0.9, 0.99, 0.9999] {
                let lambda = rho * f64::from(c) * mu1;
                let m = model.analyze(lambda).expect("stable");
                let erlang = erlang_c(c, lambda / mu1);
                assert_rel(m.wait_probability, erlang, 1e-9);
                let wait_ms = 1000.0 * erlang / (f64::from(c) * mu1 - lambda);
                assert_rel(m.mean_wait_ms, wait_ms, 1e-9);
                // N_s = λ/μ1 (every served request holds a slot for 1/μ1).
                assert_rel(m.mean_in_service, lambda / mu1, 1e-9);
                // Continuous batching: a prompt alone (80 ms) plus, with others running, their
                // decode step and half a step of residual (25 + 12.5 ms).
                let ttft = m.mean_ttft_ms() - wait_ms;
                assert!((80.0..=117.5 + 1e-9).contains(&ttft), "{ttft}");
            }
            // A prefill replica with a flat prefill is M/M/c with service 80 ms: TTFT = 80 + W.
            let prefill = ReplicaModel::new(params(25.0, 0.0, 80.0, 0.0), c, Role::Prefill, workload(1000.0, 101.0));
            let mu1 = 1000.0 / 80.0;
            for rho in [0.3, 0.9, 0.99] {
                let lambda = rho * f64::from(c) * mu1;
                let m = prefill.analyze(lambda).expect("stable");
                let wait_ms = 1000.0 * erlang_c(c, lambda / mu1) / (f64::from(c) * mu1 - lambda);
                assert_rel(m.mean_ttft_ms(), 80.0 + wait_ms, 1e-9);
            }
        }
    }

    #[test]
    fn large_batch_at_high_load_stays_finite_where_plain_products_overflow() {
        // A small per-request cost makes μ(B) ≫ μ(1), so partial products Π_{i≤n} λ/μ(i)
        // grow far beyond f64::MAX before the ratios drop below 1 near B.
        let model = ReplicaModel::new(params(30.0, 0.01, 10.0, 0.001), 4096, Role::Both, workload(1000.0, 200.0));
        let lambda = 0.999 * model.saturation_rps();
        let log_peak = (0..=4096).map(|n| model.log_weight(n, lambda.ln())).fold(f64::NEG_INFINITY, f64::max);
        assert!(log_peak > f64::MAX.ln(), "{log_peak}");
        let m = model.analyze(lambda).expect("stable");
        assert!((0.0..=1.0).contains(&m.wait_probability));
        assert!(m.mean_in_service > 0.0 && m.mean_in_service <= 4096.0);
        for s in STATS {
            assert!(m.ttft_ms(s).is_finite() && m.ttft_ms(s) > 0.0);
            assert!(m.itl_ms(s).is_finite() && m.itl_ms(s) > 0.0);
        }
        assert!(m.mean_wait_ms.is_finite() && m.mean_queue_len.is_finite());
    }

    #[test]
    fn metrics_match_a_direct_truncated_sum() {
        let model = ReplicaModel::new(params(20.0, 0.8, 40.0, 0.05), 8, Role::Both, workload(300.0, 50.0));
        let b = 8;
        let lambda = 0.9 * model.saturation_rps();
        let m = model.analyze(lambda).expect("stable");
        let p = naive_distribution(&model, lambda, 5000);
        let in_service: f64 = p.iter().enumerate().map(|(n, x)| n.min(b) as f64 * x).sum();
        let queue: f64 = p.iter().enumerate().map(|(n, x)| n.saturating_sub(b) as f64 * x).sum();
        let waiting: f64 = p[b..].iter().sum();
        assert_rel(m.mean_in_service, in_service, 1e-9);
        assert_rel(m.mean_queue_len, queue, 1e-9);
        assert_rel(m.wait_probability, waiting, 1e-9);
        assert_rel(m.mean_wait_ms, 1000.0 * queue / lambda, 1e-9);
        // Token-weighted ITL: state n makes min(n,B) tokens per step of step(min(n,B)).
        let (mut tokens, mut itl_sum) = (0.0, 0.0);
        for (n, x) in p.iter().enumerate().skip(1) {
            let k = n.min(b) as f64;
            let share = x * k / model.decode_step_ms(k);
            tokens += share;
            itl_sum += share * model.decode_step_ms(k);
        }
        assert_rel(m.mean_itl_ms(), itl_sum / tokens, 1e-9);
        let first: f64 = p.iter().enumerate().map(|(n, x)| x * model.first_token_ms(n.min(b - 1))).sum();
        assert_rel(m.mean_ttft_ms(), first + m.mean_wait_ms, 1e-9);
        // The decode steps and the request's own prefill add up to T(n) exactly.
        for n in 1..=b {
            let n_f = n as f64;
            let total = model.prefill_ms(1.0) + (model.workload().output_tokens - 1.0) * model.decode_step_ms(n_f);
            assert_rel(total, model.service_time_ms(n as u32), 1e-12);
        }
    }

    #[test]
    fn wait_quantile_solves_the_erlang_mixture_equation() {
        let model = ReplicaModel::new(params(20.0, 0.8, 40.0, 0.05), 8, Role::Both, workload(300.0, 50.0));
        for load in [0.7, 0.9, 0.97] {
            let lambda = load * model.saturation_rps();
            let m = model.analyze(lambda).expect("stable");
            let p = naive_distribution(&model, lambda, 8000);
            for s in QUANTILE_STATS {
                let q = s.quantile().expect("quantile");
                let t = m.wait_ms(s);
                if m.wait_probability > 1.0 - q {
                    assert!(t > 0.0);
                    assert_rel(naive_wait_survival(&model, &p, t), 1.0 - q, 1e-9);
                } else {
                    // Waits rarer than 1 − q: the quantile is the atom at zero.
                    assert_eq!(t, 0.0);
                }
            }
        }
    }

    #[test]
    fn ttft_quantile_is_the_smallest_time_reaching_q() {
        let model = ReplicaModel::new(params(20.0, 0.8, 40.0, 0.05), 8, Role::Both, workload(300.0, 50.0));
        // Low load puts the quantiles on prefill atoms, high load in the waiting tail.
        for load in [0.2, 0.6, 0.95] {
            let lambda = load * model.saturation_rps();
            let m = model.analyze(lambda).expect("stable");
            let p = naive_distribution(&model, lambda, 8000);
            for s in QUANTILE_STATS {
                let q = s.quantile().expect("quantile");
                let t = m.ttft_ms(s);
                assert!(naive_ttft_cdf(&model, &p, t) >= q - 1e-9, "{s:?} at {load}");
                assert!(naive_ttft_cdf(&model, &p, t * (1.0 - 1e-7)) < q, "{s:?} at {load}");
            }
        }
    }

    #[test]
    fn fast_quantiles_match_the_general_bisection() {
        let cases = [
            (params(20.0, 0.8, 40.0, 0.05), 8, Role::Both),
            (params(30.0, 0.3, 11.0, 0.09), 64, Role::Both),
            (params(30.0, 0.3, 11.0, 0.09), 64, Role::Prefill),
            (params(30.0, 0.3, 11.0, 0.09), 64, Role::Decode),
            (params(10.0, 0.0, 0.0, 0.0), 16, Role::Both),
            (params(10.0, 2.0, 150.0, 0.4), 1, Role::Both),
        ];
        for (params, b, role) in cases {
            let model = ReplicaModel::new(params, b, role, workload(700.0, 120.0));
            for load in [1e-3, 0.3, 0.8, 0.95, 0.999] {
                let lambda = load * model.saturation_rps();
                let fast = model.analyze(lambda).expect("stable");
                let general = model.analyze_with(lambda, true).expect("stable");
                for s in STATS {
                    assert_rel(fast.ttft_ms(s), general.ttft_ms(s), 1e-9);
                    assert_rel(fast.itl_ms(s), general.itl_ms(s), 1e-9);
                }
            }
        }
    }

    #[test]
    fn negative_prefill_slope_falls_back_to_exact_quantiles() {
        // Not a valid fit, but the quantiles must still be the smallest t reaching q.
        let model = ReplicaModel::new(params(20.0, 0.8, 400.0, -0.01), 8, Role::Both, workload(300.0, 50.0));
        assert!(model.prefill_ms(8.0) < model.prefill_ms(1.0));
        for load in [0.3, 0.9] {
            let lambda = load * model.saturation_rps();
            let m = model.analyze(lambda).expect("stable");
            let p = naive_distribution(&model, lambda, 8000);
            for s in QUANTILE_STATS {
                let q = s.quantile().expect("quantile");
                let t = m.ttft_ms(s);
                assert!(naive_ttft_cdf(&model, &p, t) >= q - 1e-9);
                assert!(naive_ttft_cdf(&model, &p, t * (1.0 - 1e-7)) < q);
            }
        }
    }

    #[test]
    fn zero_arrivals_are_an_idle_replica_without_nan() {
        let model = ReplicaModel::new(params(20.0, 0.8, 40.0, 0.05), 8, Role::Both, workload(300.0, 50.0));
        let m = model.analyze(0.0).expect("stable");
        assert_eq!(m.utilization, 0.0);
        assert_eq!(m.mean_in_service, 0.0);
        assert_eq!(m.mean_queue_len, 0.0);
        assert_eq!(m.wait_probability, 0.0);
        assert_eq!(m.mean_wait_ms, 0.0);
        assert_eq!(m.predicted_throughput_rps(), 0.0);
        for s in STATS {
            assert_eq!(m.ttft_ms(s), model.prefill_ms(1.0));
            assert_eq!(m.itl_ms(s), model.itl_ms(1.0));
            assert_eq!(m.wait_ms(s), 0.0);
        }
    }

    #[test]
    fn light_load_tends_to_a_lone_request() {
        let model = ReplicaModel::new(params(20.0, 0.8, 40.0, 0.05), 64, Role::Both, workload(300.0, 50.0));
        for lambda in [1e-6, 1e-100, 1e-300, f64::MIN_POSITIVE] {
            let m = model.analyze(lambda).expect("stable");
            assert_rel(m.mean_itl_ms(), model.itl_ms(1.0), 1e-5);
            assert_rel(m.mean_ttft_ms(), model.prefill_ms(1.0), 1e-5);
            assert_eq!(m.ttft_ms(Statistic::P99), model.prefill_ms(1.0));
        }
    }

    #[test]
    fn unstable_or_invalid_rates_have_no_steady_state() {
        let model = mm1_model();
        let mu = model.saturation_rps();
        for lambda in [mu, 2.0 * mu, -1.0, f64::NAN, f64::INFINITY] {
            assert!(model.analyze(lambda).is_none(), "{lambda}");
        }
        assert!(model.analyze(mu * (1.0 - 1e-12)).is_some());
    }

    #[test]
    fn service_time_follows_the_role() {
        let p = LatencyParams {
            alpha_ms: 20.0,
            beta_ms: 0.5,
            gamma_ms: 30.0,
            delta_ms: 0.1,
            prefill_quadratic_ms: 1e-5,
            itl_context_ms: 1e-4,
        };
        let w = workload(1000.0, 101.0);
        let both = ReplicaModel::new(p, 16, Role::Both, w);
        // L = 1000 + 101/2 = 1050.5; ITL(4) = 20 + 2 + 1e-4·4·1050.5 = 22.4202.
        assert_rel(both.itl_ms(4.0), 22.4202, 1e-12);
        // prefill(4) = 30 + 0.1·1000·4 + 1e-5·1e6·4 = 470.
        assert_rel(both.prefill_ms(4.0), 470.0, 1e-12);
        assert_rel(both.service_time_ms(4), 470.0 + 100.0 * 22.4202, 1e-12);
        let prefill = ReplicaModel::new(p, 16, Role::Prefill, w);
        assert_rel(prefill.service_time_ms(4), 470.0, 1e-12);
        let decode = ReplicaModel::new(p, 16, Role::Decode, w);
        assert_rel(decode.service_time_ms(4), 100.0 * 22.4202, 1e-12);
        // One output token: a decode replica still takes one step.
        let decode_one = ReplicaModel::new(p, 16, Role::Decode, workload(1000.0, 1.0));
        assert_rel(decode_one.service_time_ms(4), decode_one.itl_ms(4.0), 1e-12);
        assert_rel(both.saturation_rps(), 16000.0 / both.service_time_ms(16), 1e-12);
    }

    #[test]
    fn zero_service_time_keeps_rates_finite() {
        // γ = δ = 0 and one output token: T(n) = 0; the floor keeps μ finite.
        let model = ReplicaModel::new(params(0.0, 0.0, 0.0, 0.0), 4, Role::Both, workload(1.0, 1.0));
        assert!(model.saturation_rps().is_finite());
        let m = model.analyze(0.5 * model.saturation_rps()).expect("stable");
        for s in STATS {
            assert!(m.ttft_ms(s).is_finite() && m.itl_ms(s).is_finite());
        }
    }

    #[test]
    fn prefill_replica_reports_no_itl_and_decode_ttft_is_the_wait() {
        let p = params(20.0, 0.8, 40.0, 0.05);
        let prefill = ReplicaModel::new(p, 8, Role::Prefill, workload(300.0, 50.0));
        let m = prefill.analyze(0.9 * prefill.saturation_rps()).expect("stable");
        for s in STATS {
            assert_eq!(m.itl_ms(s), 0.0);
        }
        // Every arrival pays at least a lone prefill, plus its wait.
        assert!(m.mean_ttft_ms() > m.mean_wait_ms + prefill.prefill_ms(1.0));
        assert!(m.mean_ttft_ms() < m.mean_wait_ms + prefill.prefill_ms(8.0));
        let decode = ReplicaModel::new(p, 8, Role::Decode, workload(300.0, 50.0));
        let m = decode.analyze(0.9 * decode.saturation_rps()).expect("stable");
        for s in STATS {
            assert_eq!(m.ttft_ms(s), m.wait_ms(s));
        }
        assert!(m.mean_itl_ms() > decode.itl_ms(1.0));
    }

    #[test]
    fn ttft_percentile_is_below_the_mean_when_waits_are_rare() {
        // The honest counterexample to "p95 ≥ mean": at ρ = 0.04 only 4 % of arrivals wait,
        // so the 95th percentile never waits while the mean includes the rare long waits.
        let model = mm1_model();
        let m = model.analyze(0.04 * model.saturation_rps()).expect("stable");
        assert!(m.wait_probability < 0.05);
        assert_eq!(m.ttft_ms(Statistic::P95), 100.0);
        assert!(m.mean_ttft_ms() > m.ttft_ms(Statistic::P95));
        // And for any exponential wait the median is below the mean (ln 2 < 1).
        let busy = model.analyze(0.99 * model.saturation_rps()).expect("stable");
        assert!(busy.wait_ms(Statistic::P50) < busy.mean_wait_ms);
    }

    fn arb_model() -> impl Strategy<Value = ReplicaModel> {
        (
            (5.0..60.0f64, 0.0..2.0f64, 0.0..200.0f64, 0.0..0.5f64),
            (0.0..1e-6f64, 0.0..1e-5f64),
            (1.0..8000.0f64, 1.0..2000.0f64, 1u32..=512),
            prop_oneof![Just(Role::Both), Just(Role::Prefill), Just(Role::Decode)],
        )
            .prop_map(|((alpha, beta, gamma, delta), (eps, eta), (i, o, b), role)| {
                let params = LatencyParams {
                    alpha_ms: alpha,
                    beta_ms: beta,
                    gamma_ms: gamma,
                    delta_ms: delta,
                    prefill_quadratic_ms: eps,
                    itl_context_ms: eta,
                };
                ReplicaModel::new(params, b, role, workload(i, o))
            })
    }

    /// a ≤ b up to rounding.
    fn at_most(a: f64, b: f64) -> bool {
        a <= b + 1e-9 * b.abs().max(1.0)
    }

    proptest! {
        #[test]
        fn latencies_are_non_decreasing_in_load(
            model in arb_model(),
            u1 in 0.0..0.9999f64,
            u2 in 0.0..0.9999f64,
        ) {
            let (lo, hi) = (u1.min(u2), u1.max(u2));
            let mu = model.saturation_rps();
            let a = model.analyze(lo * mu).expect("stable");
            let b = model.analyze(hi * mu).expect("stable");
            for s in STATS {
                prop_assert!(at_most(a.ttft_ms(s), b.ttft_ms(s)), "ttft {:?}: {} > {}", s, a.ttft_ms(s), b.ttft_ms(s));
                prop_assert!(at_most(a.itl_ms(s), b.itl_ms(s)), "itl {:?}: {} > {}", s, a.itl_ms(s), b.itl_ms(s));
            }
            prop_assert!(at_most(a.wait_probability, b.wait_probability));
            prop_assert!(at_most(a.mean_wait_ms, b.mean_wait_ms));
        }

        #[test]
        fn percentiles_are_non_decreasing_in_q(model in arb_model(), u in 0.0..0.9999f64) {
            let m = model.analyze(u * model.saturation_rps()).expect("stable");
            for pair in QUANTILE_STATS.windows(2) {
                prop_assert!(m.ttft_ms(pair[0]) <= m.ttft_ms(pair[1]));
                prop_assert!(m.itl_ms(pair[0]) <= m.itl_ms(pair[1]));
                prop_assert!(m.wait_ms(pair[0]) <= m.wait_ms(pair[1]));
            }
        }

        #[test]
        fn tail_percentiles_are_at_least_the_mean_when_waiting_is_common(
            model in arb_model(),
            u in 0.95..0.9999f64,
        ) {
            let m = model.analyze(u * model.saturation_rps()).expect("stable");
            // TTFT = prefill part + wait, comonotone in n, so p_q = prefill_q + wait_q. With
            // P(wait) ≥ 1 − q the prefill quantile is prefill(B) ≥ its mean, and
            // wait_q = ln(P(wait)/(1−q))/θ ≥ P(wait)/θ = mean wait once P(wait) ≥ 0.2 for
            // q ≥ 0.9. ITL: P(wait) ≥ 1 − q puts the quantile on ITL(B), the largest value.
            for s in [Statistic::P90, Statistic::P95, Statistic::P99] {
                let q = s.quantile().expect("quantile");
                if m.wait_probability >= 0.2 {
                    prop_assert!(at_most(m.mean_ttft_ms(), m.ttft_ms(s)));
                }
                if m.wait_probability >= 1.0 - q {
                    prop_assert!(at_most(m.mean_itl_ms(), m.itl_ms(s)));
                }
            }
        }

        #[test]
        fn probabilities_and_means_are_consistent(model in arb_model(), u in 0.0..0.9999f64) {
            let lambda = u * model.saturation_rps();
            let m = model.analyze(lambda).expect("stable");
            prop_assert!((0.0..=1.0).contains(&m.wait_probability));
            prop_assert!(m.mean_in_service >= 0.0);
            prop_assert!(at_most(m.mean_in_service, f64::from(model.max_batch())));
            prop_assert!(m.mean_wait_ms >= 0.0 && m.mean_wait_ms.is_finite());
            if lambda > 0.0 {
                prop_assert!(((m.mean_wait_ms - 1000.0 * m.mean_queue_len / lambda).abs())
                    <= 1e-9 * m.mean_wait_ms.max(1e-300));
            }
        }
    }
}
