//! Window compliance: per (window, class), whether the statistic each target declares met the
//! target in that window — a p90 TTFT target of 2 s is met in a window when the p90 TTFT of the
//! requests arriving in it is at most 2 s; a mean target when their mean is.
//!
//! Per-request attainment ([`super::meets_slo`]) asks "how many requests were fast enough";
//! window compliance asks "how often did the service keep its declared promise", which is how an
//! SLO with a percentile is read. Pure.
//!
//! A request that never got its first token (dropped, or unfinished when the run stopped) has an
//! unbounded TTFT and ITL: it counts against every statistic of its window. A single-token
//! request has no inter-token gap and is left out of ITL statistics.

use std::collections::BTreeMap;

use super::engine::RequestOutcome;
use super::{Attainment, Request, quantile};
use crate::analyze::Statistic;
use crate::analyze::capacity::Target;
use crate::scenario::Snapshot;

/// The window of SLO reporting: 5 minutes.
pub const WINDOW_S: f64 = 300.0;

/// One (window, class).
#[derive(Clone, Debug, PartialEq)]
pub struct WindowCheck {
    /// Window start, seconds of the replay.
    pub start_s: f64,
    /// Window end; earlier than `start_s + window` for the last, partial window.
    pub end_s: f64,
    pub class: String,
    /// Requests of the class that arrived in the window.
    pub requests: u64,
    /// Every target of every model of the class with requests in the window was met.
    pub met: bool,
    /// Each (model, metric) checked.
    pub checks: Vec<StatisticCheck>,
}

/// One target's statistic over one window.
#[derive(Clone, Debug, PartialEq)]
pub struct StatisticCheck {
    pub model: String,
    /// `ttft` or `itl`.
    pub metric: &'static str,
    pub statistic: Statistic,
    /// The window's value of the statistic, ms (infinite when a request never got a token).
    pub observed_ms: f64,
    pub target_ms: f64,
    pub met: bool,
}

/// Window checks of one run, sorted by window then class. `end_s` closes the last window (the
/// last arrival, normally); windows in which a class had no requests are not checks.
pub fn window_compliance(
    snapshot: &Snapshot,
    requests: &[Request],
    outcomes: &[RequestOutcome],
    window_s: f64,
    end_s: f64,
) -> Vec<WindowCheck> {
    let window_s = window_s.max(1e-9);
    // (window, class) → (model, demand) → (TTFTs, ITLs)
    type Values = (Vec<f64>, Vec<f64>);
    type ByDemand = BTreeMap<(usize, usize), Values>;
    let mut cells: BTreeMap<(usize, &str), ByDemand> = BTreeMap::new();
    for (r, o) in requests.iter().zip(outcomes) {
        let w = (r.arrival_s.max(0.0) / window_s).floor() as usize;
        let demand = &snapshot.models[r.model].demands[r.demand];
        let class = snapshot.classes[demand.class].name.as_str();
        let values = cells.entry((w, class)).or_default().entry((r.model, r.demand)).or_default();
        values.0.push(o.ttft_ms().unwrap_or(f64::INFINITY));
        if r.output_tokens > 1 {
            values.1.push(o.itl_ms(r.output_tokens).unwrap_or(f64::INFINITY));
        }
    }
    cells
        .into_iter()
        .map(|((w, class), by_demand)| {
            let start_s = w as f64 * window_s;
            let mut checks = Vec::new();
            let mut count = 0;
            for ((m, k), (mut ttfts, mut itls)) in by_demand {
                count += ttfts.len() as u64;
                let slo = &snapshot.models[m].demands[k].slo;
                let model = &snapshot.models[m].name;
                for (metric, target, values) in [("ttft", slo.ttft, &mut ttfts), ("itl", slo.itl, &mut itls)] {
                    if let Some(target) = target
                        && !values.is_empty()
                    {
                        checks.push(check(model, metric, target, values));
                    }
                }
            }
            WindowCheck {
                start_s,
                end_s: (start_s + window_s).min(end_s.max(start_s)),
                class: class.to_string(),
                requests: count,
                met: checks.iter().all(|c| c.met),
                checks,
            }
        })
        .collect()
}

fn check(model: &str, metric: &'static str, target: Target, values: &mut [f64]) -> StatisticCheck {
    let observed_ms = match target.statistic.quantile() {
        Some(q) => quantile(values, q),
        None => values.iter().sum::<f64>() / values.len() as f64,
    };
    StatisticCheck {
        model: model.to_string(),
        metric,
        statistic: target.statistic,
        observed_ms,
        target_ms: target.ms,
        met: observed_ms <= target.ms,
    }
}

/// Compliant (window, class) cells out of all, overall and per class.
pub fn compliance(checks: &[WindowCheck]) -> (Attainment, BTreeMap<String, Attainment>) {
    let mut all = Attainment::default();
    let mut by_class: BTreeMap<String, Attainment> = BTreeMap::new();
    for c in checks {
        for a in [&mut all, by_class.entry(c.class.clone()).or_default()] {
            a.total += 1;
            a.met += u64::from(c.met);
        }
    }
    (all, by_class)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two classes of one model: gold wants p90 TTFT ≤ 1 s, iron a mean ITL ≤ 50 ms.
    fn snapshot() -> Snapshot {
        crate::scenario::load(
            "accelerators: [{ name: G, gpus: 8, cost_usd_per_gpu_hour: 1 }]\n\
             service_classes:\n\
             - { name: gold, priority: 1, targets: [{ model: m, ttft: { ms: 1000, statistic: p90 } }] }\n\
             - { name: iron, priority: 2, targets: [{ model: m, itl: { ms: 50 } }] }\n\
             load:\n\
             - { model: m, class: gold, arrival_rate_rps: 1, input_tokens: 10, output_tokens: 10 }\n\
             - { model: m, class: iron, arrival_rate_rps: 1, input_tokens: 10, output_tokens: 10 }\n\
             profiles: [{ name: p, alpha_ms: 20, beta_ms: 1, gamma_ms: 10, delta_ms: 0.1 }]\n\
             variants: [{ name: a, model: m, accelerator: G, gpus_per_replica: 1, max_batch: 8, profile: p }]\n",
        )
        .expect("valid")
    }

    fn request(arrival_s: f64, demand: usize, output_tokens: u32) -> Request {
        Request { arrival_s, input_tokens: 10, output_tokens, model: 0, demand }
    }

    /// A request served with this TTFT and mean ITL (ms); `None` never got a token.
    fn outcome(arrival_s: f64, ttft_itl_ms: Option<(f64, f64)>, output_tokens: u32) -> RequestOutcome {
        let (first, done) = match ttft_itl_ms {
            Some((ttft, itl)) => {
                let first = arrival_s + ttft / 1e3;
                (Some(first), Some(first + itl / 1e3 * f64::from(output_tokens - 1)))
            }
            None => (None, None),
        };
        RequestOutcome { arrival_s, first_token_s: first, done_s: done, dropped: ttft_itl_ms.is_none() }
    }

    #[test]
    fn a_p90_target_is_met_in_a_window_when_that_windows_p90_is_under_it() {
        let s = snapshot();
        // Window 0: 10 gold requests, one slow (3 s): the p90 (nearest rank: the 9th of 10) is
        // fast, so the window complies although one request missed. Window 1: two slow of 10.
        let mut requests = Vec::new();
        let mut outcomes = Vec::new();
        for w in 0..2 {
            for i in 0..10 {
                let t = f64::from(w) * 300.0 + f64::from(i);
                let slow = i < w + 1;
                requests.push(request(t, 0, 10));
                outcomes.push(outcome(t, Some((if slow { 3000.0 } else { 400.0 }, 20.0)), 10));
            }
        }
        let checks = window_compliance(&s, &requests, &outcomes, WINDOW_S, 309.0);
        assert_eq!(checks.len(), 2);
        assert!(checks[0].met, "{:?}", checks[0]);
        assert!((checks[0].checks[0].observed_ms - 400.0).abs() < 1e-6);
        assert!(!checks[1].met);
        assert!((checks[1].checks[0].observed_ms - 3000.0).abs() < 1e-6);
        assert_eq!((checks[1].start_s, checks[1].end_s), (300.0, 309.0), "the last window is partial");
        let (all, by_class) = compliance(&checks);
        assert_eq!((all.met, all.total), (1, 2));
        assert_eq!(by_class["gold"].share(), 0.5);
    }

    #[test]
    fn a_mean_target_fails_a_window_where_a_request_never_got_a_token() {
        let s = snapshot();
        let requests = vec![request(1.0, 1, 5), request(2.0, 1, 5), request(400.0, 1, 5), request(401.0, 1, 1)];
        let outcomes = vec![
            outcome(1.0, Some((100.0, 30.0)), 5),
            outcome(2.0, Some((100.0, 60.0)), 5),
            outcome(400.0, None, 5),
            outcome(401.0, Some((100.0, 0.0)), 1),
        ];
        let checks = window_compliance(&s, &requests, &outcomes, WINDOW_S, 401.0);
        // Window 0: mean ITL 45 ms ≤ 50. Window 1: one dropped request: unbounded.
        assert_eq!(
            checks.iter().map(|c| (c.class.as_str(), c.met)).collect::<Vec<_>>(),
            vec![("iron", true), ("iron", false)]
        );
        assert!((checks[0].checks[0].observed_ms - 45.0).abs() < 1e-6);
        assert!(checks[1].checks[0].observed_ms.is_infinite());
        assert_eq!(checks[1].requests, 2, "the single-token request counts, without an ITL");
    }

    #[test]
    fn classes_without_requests_in_a_window_are_not_checked() {
        let s = snapshot();
        let requests = vec![request(10.0, 0, 2), request(700.0, 1, 2)];
        let outcomes = vec![outcome(10.0, Some((10.0, 10.0)), 2), outcome(700.0, Some((10.0, 10.0)), 2)];
        let checks = window_compliance(&s, &requests, &outcomes, WINDOW_S, 700.0);
        assert_eq!(
            checks.iter().map(|c| (c.start_s, c.class.as_str())).collect::<Vec<_>>(),
            vec![(0.0, "gold"), (600.0, "iron")]
        );
        assert!(checks.iter().all(|c| c.met));
    }
}
