//! The human-readable plan: one row per variant, then totals and what binds.

use std::fmt::Write;

use crate::plan::{Binding, Plan, PlanMode};

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

/// Render a plan as a plain-text table.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let w = &mut out;
    if let Some(name) = &plan.scenario {
        let _ = writeln!(w, "{name}");
    }
    let mode = match plan.mode {
        PlanMode::AllServed => "all demand served",
        PlanMode::FairShare => "GPUs short: fair share by priority",
        PlanMode::NothingServable => "NOTHING SERVABLE: no variant can serve any load",
    };
    let _ = writeln!(
        w,
        "status {:?}, {mode}, solved in {:.0} ms, MIP gap {:.2} %\n",
        plan.status,
        plan.solve_ms,
        plan.mip_gap * 100.0
    );
    let _ = writeln!(
        w,
        "{:<28} {:<22} {:<7} {:>9} {:>9} {:>9} {:>13} {:>13} {:>5} {:>9}",
        "VARIANT",
        "ACCELERATOR×GPUS",
        "ROLE",
        "REPLICAS",
        "CAP r/s",
        "LOAD r/s",
        "TTFT ms/SLO",
        "ITL ms/SLO",
        "UTIL",
        "$/HOUR"
    );
    for v in &plan.variants {
        // Capacity per replica for the classes this variant serves (all of its classes when idle).
        let serving: Vec<String> = v
            .capacity_rps
            .iter()
            .filter(|(class, _)| v.load_by_class_rps.is_empty() || v.load_by_class_rps.contains_key(*class))
            .map(|(_, rps)| format!("{rps:.2}"))
            .collect();
        let (mut ttft, mut itl, mut util) = ("-".to_string(), "-".to_string(), "-".to_string());
        if let Some(p) = &v.predicted {
            util = format!("{:.0}%", p.utilization * 100.0);
            // Show the tightest class's statistic against its target, with ✗ when missed.
            if let Some(check) = p.slo.first() {
                let cell = |c: &Option<crate::plan::TargetCheck>| {
                    c.as_ref().map_or("-".to_string(), |c| {
                        let mark = if c.predicted_ms <= c.target_ms * (1.0 + 1e-6) { "" } else { "✗" };
                        format!("{}/{}{mark}", ms(Some(c.predicted_ms)), ms(Some(c.target_ms)))
                    })
                };
                ttft = cell(&check.ttft);
                itl = cell(&check.itl);
            }
        }
        let _ = writeln!(
            w,
            "{:<28} {:<22} {:<7} {:>9} {:>9} {:>9} {:>13} {:>13} {:>5} {:>9.2}",
            v.name,
            format!("{}×{}", v.accelerator, v.gpus_per_replica),
            v.role.as_str(),
            format!("{}→{}", v.current_replicas, v.replicas),
            if serving.is_empty() { "-".into() } else { serving.join("/") },
            format!("{:.2}", v.load_rps),
            ttft,
            itl,
            util,
            v.cost_usd_per_hour
        );
    }
    let _ = writeln!(w, "\n{:<28} {:>8} {:>9} {:>10} {:>7}", "MODEL / CLASS", "PRIORITY", "DEMAND", "SERVED", "UNMET");
    for m in &plan.models {
        let _ = writeln!(
            w,
            "{:<28} {:>8} {:>9.2} {:>9.1}% {:>7.2}",
            format!("{} / {}", m.name, m.class),
            m.priority,
            m.demand_rps,
            m.served_fraction * 100.0,
            m.unmet_rps
        );
    }
    let _ = writeln!(w, "\n{:<20} {:>9} {:>9} {:>9} {:>9}", "ACCELERATOR", "GPUS", "USED", "FREE", "$/HOUR");
    for a in &plan.accelerators {
        let _ = writeln!(
            w,
            "{:<20} {:>9} {:>9} {:>9} {:>9.2}",
            a.name, a.available_gpus, a.used_gpus, a.free_gpus, a.cost_usd_per_hour
        );
    }
    let _ = writeln!(
        w,
        "\ncost {:.2} $/h (now {:.2} $/h), transition cost {:.2} $/h",
        plan.cost_usd_per_hour, plan.current_cost_usd_per_hour, plan.transition_cost_usd_per_hour
    );
    if !plan.binding.is_empty() {
        let _ = writeln!(w, "\nbinding:");
        for b in &plan.binding {
            let _ = writeln!(w, "  {}", describe(b));
        }
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(w, "\nwarnings:");
        for msg in &plan.warnings {
            let _ = writeln!(w, "  {msg}");
        }
    }
    out
}

/// One line per binding constraint.
pub fn describe(b: &Binding) -> String {
    match b {
        Binding::InventoryExhausted { accelerator, used_gpus, available_gpus } => {
            format!("inventory exhausted: {accelerator} uses {used_gpus} of {available_gpus} GPUs")
        }
        Binding::DemandUnmet { model, class, unmet_rps, served_fraction } => format!(
            "demand unmet: {model} / {class} short by {unmet_rps:.2} req/s ({:.1}% served)",
            served_fraction * 100.0
        ),
        Binding::NoFeasibleVariant { model, class, reasons } => {
            format!("no variant of {model} can meet class {class}'s SLO: {}", reasons.join("; "))
        }
        Binding::MaxReplicas { variant, replicas } => format!("{variant} at its max_replicas ({replicas})"),
        Binding::MinReplicas { variant, replicas } => {
            format!("{variant} held at its min_replicas ({replicas}) without load")
        }
        Binding::PdRatio { model, bound, prefill_replicas, decode_replicas } => format!(
            "{model}: prefill/decode ratio at its {bound} ({prefill_replicas} prefill / {decode_replicas} decode)"
        ),
        Binding::LeastLoadedRouting { model, extra_cost_usd_per_hour } => format!(
            "{model}: replicas chosen so a least-loaded router keeps every variant within its SLO (+{extra_cost_usd_per_hour:.2} $/h over the plan's own split)"
        ),
    }
}
