//! `allot predict`: latency at given rates and capacity at each class's SLO, from the planner's
//! own model (`analyze::predict`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{EXIT_INVALID_INPUT, OutputFormat, emit, read_scenario, say};
use crate::analyze::predict::{Correction, PredictRequest, VariantPrediction, predict};

#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// Scenario file (YAML or JSON). Default: the bundled heterogeneous example.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Only this variant (default: every variant with a profile).
    #[arg(long)]
    pub variant: Option<String>,
    /// Replicas sharing the model's traffic (default: the variant's current replicas, at least 1).
    #[arg(long)]
    pub replicas: Option<u32>,
    /// The model's total arrival rates, req/s, comma-separated (default: the scenario's load).
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// Factor on the profile's prefill terms (γ, δ, ε), as the controller's calibration reports it
    /// (`status.calibration.prefillFactor`); with --decode-factor, predicts with the correction.
    #[arg(long)]
    pub prefill_factor: Option<f64>,
    /// Factor on the profile's decode terms (α, β, η) (`status.calibration.decodeFactor`).
    #[arg(long)]
    pub decode_factor: Option<f64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

pub fn run(args: &PredictArgs) -> ExitCode {
    let snapshot = match read_scenario(args.file.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let correction = (args.prefill_factor.is_some() || args.decode_factor.is_some()).then(|| Correction {
        prefill_factor: args.prefill_factor.unwrap_or(1.0),
        decode_factor: args.decode_factor.unwrap_or(1.0),
    });
    let request = PredictRequest {
        variant: args.variant.clone(),
        replicas: args.replicas,
        rates_rps: args.rates.clone(),
        correction,
    };
    let predictions = match predict(&snapshot, &request) {
        Ok(p) => p,
        Err(e) => {
            say(&format!("error: {e}"));
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    emit(&match args.format {
        OutputFormat::Table => render(&predictions),
        OutputFormat::Json => serde_json::to_string_pretty(&predictions).expect("predictions serialize") + "\n",
        OutputFormat::Yaml => serde_saphyr::to_string(&predictions).expect("predictions serialize"),
    })
}

/// One block per variant: capacities, then a row per rate.
pub fn render(predictions: &[VariantPrediction]) -> String {
    let mut out = String::new();
    for v in predictions {
        let _ = writeln!(
            out,
            "{} ({} on {}, {}, {} replicas)",
            v.variant,
            v.model,
            v.accelerator,
            v.role.as_str(),
            v.replicas
        );
        if let Some(c) = v.correction {
            let _ =
                writeln!(out, "  profile corrected: prefill ×{:.3}, decode ×{:.3}", c.prefill_factor, c.decode_factor);
        }
        for c in &v.capacities {
            let why = c.capacity.infeasible.as_deref().map(|w| format!(" ({w})")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  capacity at {} SLO: {:.3} req/s per replica, limited by {}{why}",
                c.class,
                c.capacity.rps,
                c.capacity.limited_by.as_str()
            );
        }
        let _ = writeln!(
            out,
            "  {:>9} {:>9} {:>5} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6} {:>5}  SLO",
            "RATE r/s", "/REPLICA", "UTIL", "TTFT ms", "p50", "p90", "p99", "ITL ms", "p90", "p99", "BATCH", "KV"
        );
        for p in &v.points {
            let Some(m) = &p.metrics else {
                let _ = writeln!(
                    out,
                    "  {:>9.3} {:>9.3}  saturated: one replica serves at most {:.3} req/s",
                    p.rate_rps, p.per_replica_rps, p.saturation_rps
                );
                continue;
            };
            let kv = m.kv_cache_utilization.map_or("-".to_string(), |u| format!("{:.0}%", 100.0 * u));
            let slo: Vec<String> =
                p.classes.iter().map(|c| format!("{} {}", c.class, if c.met { "met" } else { "missed" })).collect();
            let _ = writeln!(
                out,
                "  {:>9.3} {:>9.3} {:>4.0}% {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7.2} {:>7.2} {:>7.2} {:>6.1} {:>5}  {}",
                p.rate_rps,
                p.per_replica_rps,
                100.0 * m.utilization,
                m.ttft.mean_ms,
                m.ttft.p50_ms,
                m.ttft.p90_ms,
                m.ttft.p99_ms,
                m.itl.mean_ms,
                m.itl.p90_ms,
                m.itl.p99_ms,
                m.mean_in_service,
                kv,
                slo.join(", ")
            );
        }
        out.push('\n');
    }
    out
}
