//! Between plan and action: HPA's `behavior` semantics (autoscaling/v2, peers.md §2), applied to
//! each variant's planned replicas so users get the damping they know from HPA.
//!
//! - Stabilization windows: the recommendation is held between the lowest recommendation of the
//!   scale-up window and the highest of the scale-down window (both including this one), so a
//!   brief dip does not scale down and (with an up window) a brief spike does not scale up.
//! - Rate limits: per direction, policies of `Pods` or `Percent` change per period, counted from
//!   the replicas at the start of the period; `selectPolicy` Max takes the policy allowing the
//!   most change, Min the least, Disabled forbids that direction.
//!
//! Pure: the caller passes the time. History is per variant name, kept in `BTreeMap`s so every
//! decision is independent of hash order.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// HPA's `behavior` for both directions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Behavior {
    #[serde(default = "ScalingRules::default_up")]
    pub scale_up: ScalingRules,
    #[serde(default = "ScalingRules::default_down")]
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    /// Scale up at once to the plan (the plan is already sized for the load at ready time; rate
    /// limits apply where the configuration sets them, e.g. HPA's max(+4, ×2) per 15 s,
    /// [`ScalingRules::hpa_up`]); scale down after 300 s of lower recommendations, by up to
    /// 100 % per 15 s (HPA's default).
    fn default() -> Self {
        Self { scale_up: ScalingRules::default_up(), scale_down: ScalingRules::default_down() }
    }
}

/// One direction's rules (HPA's `HPAScalingRules`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingRules {
    pub stabilization_window_seconds: u32,
    #[serde(default)]
    pub select_policy: SelectPolicy,
    #[serde(default)]
    pub policies: Vec<ScalingPolicy>,
}

impl ScalingRules {
    /// Allot's scale-up default (also when a configuration leaves `scaleUp` out): no window and
    /// no rate limit, so a scale-up reaches the plan in one cycle.
    pub fn default_up() -> Self {
        Self { stabilization_window_seconds: 0, select_policy: SelectPolicy::Max, policies: Vec::new() }
    }

    /// HPA's scale-up default: no window, max(+4 pods, +100 %) per 15 s.
    pub fn hpa_up() -> Self {
        Self {
            stabilization_window_seconds: 0,
            select_policy: SelectPolicy::Max,
            policies: vec![
                ScalingPolicy { kind: PolicyKind::Percent, value: 100, period_seconds: 15 },
                ScalingPolicy { kind: PolicyKind::Pods, value: 4, period_seconds: 15 },
            ],
        }
    }

    pub fn default_down() -> Self {
        Self {
            stabilization_window_seconds: 300,
            select_policy: SelectPolicy::Max,
            policies: vec![ScalingPolicy { kind: PolicyKind::Percent, value: 100, period_seconds: 15 }],
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum SelectPolicy {
    #[default]
    Max,
    Min,
    Disabled,
}

/// One rate limit (HPA's `HPAScalingPolicy`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingPolicy {
    #[serde(rename = "type")]
    pub kind: PolicyKind,
    pub value: u32,
    pub period_seconds: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// Why the stabilized count differs from the recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// A higher recommendation within the scale-down window holds replicas up.
    ScaleDownWindow,
    /// A lower recommendation within the scale-up window holds replicas down.
    ScaleUpWindow,
    /// The scale-up policies allow no more this period.
    ScaleUpRate,
    /// The scale-down policies allow no fewer this period.
    ScaleDownRate,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ScaleDownWindow => "scale_down_window",
            Limit::ScaleUpWindow => "scale_up_window",
            Limit::ScaleUpRate => "scale_up_rate",
            Limit::ScaleDownRate => "scale_down_rate",
        }
    }
}

/// The outcome for one variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stabilized {
    pub replicas: u32,
    pub limit: Option<Limit>,
}

#[derive(Clone, Debug, Default)]
struct History {
    /// (time, recommendation), oldest first.
    recommendations: VecDeque<(f64, u32)>,
    /// (time, change applied), oldest first.
    events: VecDeque<(f64, i64)>,
}

/// Per-variant recommendation and scale-event history.
#[derive(Clone, Debug, Default)]
pub struct Stabilizer {
    behavior: Behavior,
    history: BTreeMap<String, History>,
}

impl Stabilizer {
    pub fn new(behavior: Behavior) -> Self {
        Self { behavior, history: BTreeMap::new() }
    }

    pub fn behavior(&self) -> &Behavior {
        &self.behavior
    }

    /// Change the behavior, keeping the history (a configuration edit must not forget what was
    /// recommended within the windows).
    pub fn set_behavior(&mut self, behavior: Behavior) {
        self.behavior = behavior;
    }

    /// What `variant`, now at `current` replicas, may become when the plan recommends
    /// `recommended`; records the recommendation. Call [`Stabilizer::record`] with what was
    /// applied.
    pub fn stabilize(&mut self, variant: &str, now_s: f64, current: u32, recommended: u32) -> Stabilized {
        let out = self.evaluate(variant, now_s, current, recommended);
        self.recommend(variant, now_s, current, recommended);
        out
    }

    /// What `variant` may become, without recording anything: a decision may ask several times
    /// in one cycle (each planning pass) and record once, what it finally recommends.
    pub fn evaluate(&self, variant: &str, now_s: f64, current: u32, recommended: u32) -> Stabilized {
        let longest = self.longest_memory_s();
        let up_window = f64::from(self.behavior.scale_up.stabilization_window_seconds);
        let down_window = f64::from(self.behavior.scale_down.stabilization_window_seconds);
        // A variant seen for the first time (or after a restart of Allot) counts what it runs as
        // a recommendation made now: the scale-down window then protects it as if it had been
        // recommended all along, instead of a restart scaling down at once.
        let first = [(now_s, current)];
        type Recent = (Vec<(f64, u32)>, Vec<(f64, i64)>);
        let (recommendations, events): Recent = match self.history.get(variant) {
            Some(h) => (
                h.recommendations.iter().copied().filter(|&(t, _)| t >= now_s - longest).collect(),
                h.events.iter().copied().filter(|&(t, _)| t >= now_s - longest).collect(),
            ),
            None => (first.to_vec(), Vec::new()),
        };
        // Windows (HPA's stabilizeRecommendationWithBehaviors).
        let (mut up_rec, mut down_rec) = (recommended, recommended);
        for &(t, r) in &recommendations {
            if t > now_s - up_window {
                up_rec = up_rec.min(r);
            }
            if t > now_s - down_window {
                down_rec = down_rec.max(r);
            }
        }
        let mut replicas = current;
        let mut limit = None;
        if replicas < up_rec {
            replicas = up_rec;
        }
        if replicas > down_rec {
            replicas = down_rec;
        }
        if replicas != recommended {
            limit = Some(if replicas > recommended { Limit::ScaleDownWindow } else { Limit::ScaleUpWindow });
        }
        // Rates (HPA's convertDesiredReplicasWithBehaviorRate).
        if replicas > current {
            let cap = rate_limit(&self.behavior.scale_up, &events, now_s, current, true);
            if replicas > cap {
                replicas = cap.max(current);
                limit = Some(Limit::ScaleUpRate);
            }
        } else if replicas < current {
            let floor = rate_limit(&self.behavior.scale_down, &events, now_s, current, false);
            if replicas < floor {
                replicas = floor.min(current);
                limit = Some(Limit::ScaleDownRate);
            }
        }
        Stabilized { replicas, limit }
    }

    /// Record `recommended` as this cycle's recommendation for `variant` (HPA stores the
    /// unstabilized recommendation), forgetting what no window or period needs any more.
    pub fn recommend(&mut self, variant: &str, now_s: f64, current: u32, recommended: u32) {
        let longest = self.longest_memory_s();
        let history = self.history.entry(variant.to_string()).or_insert_with(|| History {
            recommendations: VecDeque::from([(now_s, current)]),
            events: VecDeque::new(),
        });
        while history.recommendations.front().is_some_and(|&(t, _)| t < now_s - longest) {
            history.recommendations.pop_front();
        }
        while history.events.front().is_some_and(|&(t, _)| t < now_s - longest) {
            history.events.pop_front();
        }
        history.recommendations.push_back((now_s, recommended));
    }

    /// Record that `variant` changed from `from` to `to` replicas at `now_s` (for the rate limits).
    pub fn record(&mut self, variant: &str, now_s: f64, from: u32, to: u32) {
        if from != to {
            let history = self.history.entry(variant.to_string()).or_default();
            history.events.push_back((now_s, i64::from(to) - i64::from(from)));
        }
    }

    /// Forget variants that no longer exist.
    pub fn retain(&mut self, exists: impl Fn(&str) -> bool) {
        self.history.retain(|name, _| exists(name));
    }

    fn longest_memory_s(&self) -> f64 {
        let b = &self.behavior;
        let periods = b.scale_up.policies.iter().chain(&b.scale_down.policies).map(|p| p.period_seconds);
        periods
            .chain([b.scale_up.stabilization_window_seconds, b.scale_down.stabilization_window_seconds])
            .max()
            .map_or(0.0, f64::from)
    }
}

/// The most (scale-up) or fewest (scale-down) replicas the policies allow now.
fn rate_limit(rules: &ScalingRules, events: &[(f64, i64)], now_s: f64, current: u32, up: bool) -> u32 {
    if rules.select_policy == SelectPolicy::Disabled {
        return current;
    }
    if rules.policies.is_empty() {
        return if up { u32::MAX } else { 0 };
    }
    let limits = rules.policies.iter().map(|p| {
        let since = now_s - f64::from(p.period_seconds);
        let (mut added, mut removed) = (0i64, 0i64);
        for &(t, change) in events {
            if t > since {
                if change > 0 {
                    added += change;
                } else {
                    removed -= change;
                }
            }
        }
        // Replicas at the start of the period.
        let start = (i64::from(current) - added + removed).max(0) as f64;
        let value = f64::from(p.value);
        let limit = match (p.kind, up) {
            (PolicyKind::Pods, true) => start + value,
            (PolicyKind::Percent, true) => (start * (1.0 + value / 100.0)).ceil(),
            (PolicyKind::Pods, false) => start - value,
            // HPA: int32(start × (1 − value/100)), a truncation (calculateScaleDownLimitWithBehaviors).
            (PolicyKind::Percent, false) => (start * (1.0 - value / 100.0)).trunc(),
        };
        limit.clamp(0.0, f64::from(u32::MAX)) as u32
    });
    // Max: the policy allowing the most change; Min: the least.
    match (rules.select_policy, up) {
        (SelectPolicy::Max, true) | (SelectPolicy::Min, false) => limits.max().unwrap_or(current),
        _ => limits.min().unwrap_or(current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(s: &mut Stabilizer, t: f64, current: u32, rec: u32) -> Stabilized {
        let out = s.stabilize("v", t, current, rec);
        s.record("v", t, current, out.replicas);
        out
    }

    #[test]
    fn scale_down_waits_for_the_window_then_follows_the_highest_recent_recommendation() {
        let mut s = Stabilizer::default();
        assert_eq!(step(&mut s, 0.0, 10, 10).replicas, 10);
        let held = step(&mut s, 30.0, 10, 4);
        assert_eq!(held, Stabilized { replicas: 10, limit: Some(Limit::ScaleDownWindow) });
        assert_eq!(step(&mut s, 200.0, 10, 6).replicas, 10);
        // At 301 s the 10 left the window; 6 (at 200 s) is the highest since.
        assert_eq!(step(&mut s, 301.0, 10, 4).replicas, 6);
        assert_eq!(step(&mut s, 501.0, 6, 4).replicas, 4);
    }

    #[test]
    fn after_a_restart_the_window_still_protects_running_replicas() {
        // No history: the first recommendation to shrink waits the whole window.
        let mut s = Stabilizer::default();
        assert_eq!(step(&mut s, 1000.0, 8, 2), Stabilized { replicas: 8, limit: Some(Limit::ScaleDownWindow) });
        assert_eq!(step(&mut s, 1299.0, 8, 2).replicas, 8);
        assert_eq!(step(&mut s, 1301.0, 8, 2).replicas, 2);
    }

    #[test]
    fn scale_up_is_immediate_but_rate_limited_to_max_of_four_pods_or_double() {
        let mut s = Stabilizer::new(Behavior { scale_up: ScalingRules::hpa_up(), ..Behavior::default() });
        let out = step(&mut s, 0.0, 1, 20);
        assert_eq!(out, Stabilized { replicas: 5, limit: Some(Limit::ScaleUpRate) });
        // Within the same 15 s period the budget is spent (counted from the period's start: 1).
        assert_eq!(step(&mut s, 10.0, 5, 20).replicas, 5);
        // Next period: from 5, max(5 + 4, 10) = 10.
        assert_eq!(step(&mut s, 16.0, 5, 20).replicas, 10);
        assert_eq!(step(&mut s, 32.0, 10, 20).replicas, 20);
    }

    #[test]
    fn by_default_a_scale_up_reaches_the_plan_in_one_cycle() {
        let mut s = Stabilizer::default();
        assert_eq!(step(&mut s, 0.0, 1, 20), Stabilized { replicas: 20, limit: None });
    }

    #[test]
    fn evaluating_records_nothing() {
        let mut s = Stabilizer::default();
        assert_eq!(step(&mut s, 0.0, 10, 10).replicas, 10);
        // Asking twice what 4 would give changes nothing: only a recorded recommendation counts.
        for _ in 0..2 {
            assert_eq!(s.evaluate("v", 301.0, 10, 4), Stabilized { replicas: 4, limit: None });
        }
        s.recommend("v", 301.0, 10, 9);
        assert_eq!(s.evaluate("v", 302.0, 10, 4), Stabilized { replicas: 9, limit: Some(Limit::ScaleDownWindow) });
    }

    #[test]
    fn disabled_scale_down_never_removes_replicas() {
        let mut behavior = Behavior::default();
        behavior.scale_down.select_policy = SelectPolicy::Disabled;
        behavior.scale_down.stabilization_window_seconds = 0;
        let mut s = Stabilizer::new(behavior);
        assert_eq!(step(&mut s, 0.0, 8, 2), Stabilized { replicas: 8, limit: Some(Limit::ScaleDownRate) });
        assert_eq!(step(&mut s, 0.0, 8, 12).replicas, 12);
    }

    #[test]
    fn pods_policy_limits_scale_down_per_period() {
        let behavior = Behavior {
            scale_up: ScalingRules::default_up(),
            scale_down: ScalingRules {
                stabilization_window_seconds: 0,
                select_policy: SelectPolicy::Max,
                policies: vec![ScalingPolicy { kind: PolicyKind::Pods, value: 2, period_seconds: 60 }],
            },
        };
        let mut s = Stabilizer::new(behavior);
        assert_eq!(step(&mut s, 0.0, 10, 0).replicas, 8);
        assert_eq!(step(&mut s, 30.0, 8, 0).replicas, 8);
        assert_eq!(step(&mut s, 61.0, 8, 0).replicas, 6);
    }

    #[test]
    fn percent_scale_down_truncates_as_hpa_does() {
        let behavior = Behavior {
            scale_up: ScalingRules::default_up(),
            scale_down: ScalingRules {
                stabilization_window_seconds: 0,
                select_policy: SelectPolicy::Max,
                policies: vec![ScalingPolicy { kind: PolicyKind::Percent, value: 50, period_seconds: 60 }],
            },
        };
        let mut s = Stabilizer::new(behavior.clone());
        // HPA: int32(5 × 0.5) = 2, so three of five may go in one period (not two).
        assert_eq!(step(&mut s, 0.0, 5, 0), Stabilized { replicas: 2, limit: Some(Limit::ScaleDownRate) });
        assert_eq!(step(&mut s, 30.0, 2, 0).replicas, 2);
        assert_eq!(step(&mut s, 61.0, 2, 0).replicas, 1);
        let mut s = Stabilizer::new(behavior);
        assert_eq!(step(&mut s, 0.0, 7, 0).replicas, 3);
    }

    #[test]
    fn an_up_window_ignores_a_brief_spike() {
        let mut behavior = Behavior::default();
        behavior.scale_up.stabilization_window_seconds = 60;
        let mut s = Stabilizer::new(behavior);
        assert_eq!(step(&mut s, 0.0, 3, 3).replicas, 3);
        assert_eq!(step(&mut s, 30.0, 3, 9), Stabilized { replicas: 3, limit: Some(Limit::ScaleUpWindow) });
        // Past the window the spike's level goes through at once (no rate limit by default).
        assert_eq!(step(&mut s, 61.0, 3, 9).replicas, 9);
    }

    #[test]
    fn behavior_parses_hpa_yaml() {
        let text = "scaleDown:\n  stabilizationWindowSeconds: 120\n  policies:\n  - type: Pods\n    value: 1\n    periodSeconds: 30\n";
        let b: Behavior = serde_saphyr::from_str(text).unwrap();
        assert_eq!(b.scale_down.stabilization_window_seconds, 120);
        assert_eq!(b.scale_down.policies[0].kind, PolicyKind::Pods);
        assert_eq!(b.scale_up, ScalingRules::default_up());
    }
}
