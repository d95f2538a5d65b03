//! `allot fit`: latency profiles (`models/*.yaml`) from what users have (DESIGN §3 "Fitting"):
//! GuideLLM exports (CSV of 0.5.x, JSON of earlier versions), `vllm bench serve --save-result`
//! JSON, and Splitwise-style step timings. Parsing and fitting live in
//! [`crate::analyze::fit`]; this reads files, prints the report and writes profiles.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};

use crate::analyze::capacity::{Slo, Target};
use crate::analyze::engine::{EngineLimits, EngineSpec};
use crate::analyze::fit::measurement::{Load, Measurement};
use crate::analyze::fit::report::{FitReport, FitRequest, MixCheck, fit_report};
use crate::analyze::fit::splitwise::{
    ExcludeRule, GroupFilter, SIGNIFICANT_DIGITS, SPLITWISE_SOURCE, cross_group_notes, default_excludes, fit_group,
    group_splitwise, parse_splitwise, round_sig, to_profile,
};
use crate::analyze::fit::through_model::{FreeParameters, Stat};
use crate::analyze::fit::{DEFAULT_MIN_R2, FitOptions, guidellm, largest_residuals, vllm_bench};
use crate::analyze::{ItlPopulation, Statistic};
use crate::scenario::profile::{ProfileSpec, Provenance};

/// Input layouts `allot fit` understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, ValueEnum)]
pub enum DataFormat {
    /// Detect from the content (the default).
    #[default]
    Auto,
    /// Splitwise `perf_model.csv` (per-batch step timings in ms).
    Splitwise,
    /// GuideLLM 0.5.x CSV export.
    GuidellmCsv,
    /// GuideLLM JSON export (earlier versions: `{"benchmarks": [...]}`).
    GuidellmJson,
    /// `vllm bench serve --save-result` JSON (one run per file).
    VllmBench,
}

/// `allot fit`: fit latency profiles from benchmark data.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct FitArgs {
    /// Benchmark file(s); give several for a sweep of `vllm bench serve` runs or several mixes.
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Layout of the files (detected when not given).
    #[arg(long, value_enum, default_value_t = DataFormat::Auto)]
    pub format: DataFormat,
    /// Model name for the profile (Splitwise: fit only this model).
    #[arg(long)]
    pub model: Option<String>,
    /// Accelerator name for the profile (Splitwise: fit only this hardware).
    #[arg(long, alias = "hardware")]
    pub accelerator: Option<String>,
    /// Tensor-parallel degree for the profile (Splitwise: fit only this degree; 1 to 1024).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub tp: Option<u32>,
    /// The server's `--max-num-seqs` during the benchmark.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_num_seqs: u32,
    /// The server's `--max-num-batched-tokens` during the benchmark.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_num_batched_tokens: Option<u32>,
    /// The server's KV-cache size in tokens ("GPU KV cache size" in vLLM's log), when known.
    #[arg(long, allow_negative_numbers = true, value_parser = super::bounds::Number::within(1.0, 1e10))]
    pub kv_cache_tokens: Option<f64>,
    /// The server ran without chunked prefill.
    #[arg(long)]
    pub no_chunked_prefill: bool,
    /// SLOs whose capacities are checked per mix: `NAME=ttft:p90:200,itl:mean:15` (statistics
    /// mean, p50, p90, p99; ITL per request). Default: the two of docs/latency-model.md.
    #[arg(long = "slo", value_name = "NAME=SPEC")]
    pub slos: Vec<String>,
    /// Refit without each mix and report how the model predicts it (one refit per mix).
    #[arg(long)]
    pub leave_one_out: bool,
    /// Splitwise: also fit ε, the prefill term in batch·prompt².
    #[arg(long)]
    pub quadratic_prefill: bool,
    /// Splitwise: refuse fits whose R² is below this (0 to 1).
    #[arg(long, default_value_t = DEFAULT_MIN_R2, allow_negative_numbers = true,
          value_parser = super::bounds::Number::within(0.0, 1.0))]
    pub min_r2: f64,
    /// Splitwise: drop rows matching MODEL:TP:BATCH (`*` matches anything).
    #[arg(long = "exclude", value_name = "MODEL:TP:BATCH")]
    pub exclude: Vec<ExcludeRule>,
    /// Splitwise: do not apply the format's default exclusions.
    #[arg(long)]
    pub no_default_excludes: bool,
    /// Write each profile as `<model>_<accelerator>_tp<N>.yaml` into this folder.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Print the profiles as YAML documents on stdout (the report then goes to stderr).
    #[arg(long)]
    pub print: bool,
}

impl FitArgs {
    /// The command line that reproduces this run, recorded in each profile's provenance.
    pub fn command_line(&self) -> String {
        let mut parts = vec!["allot".to_string(), "fit".into(), "--data".into()];
        parts.extend(self.data.iter().map(|d| shell_word(&d.display().to_string())));
        if self.format != DataFormat::default()
            && let Some(v) = self.format.to_possible_value()
        {
            parts.push("--format".into());
            parts.push(v.get_name().to_string());
        }
        for (flag, value) in [("--model", &self.model), ("--accelerator", &self.accelerator)] {
            if let Some(v) = value {
                parts.push(flag.into());
                parts.push(shell_word(v));
            }
        }
        if let Some(tp) = self.tp {
            parts.extend(["--tp".into(), tp.to_string()]);
        }
        if self.max_num_seqs != 1024 {
            parts.extend(["--max-num-seqs".into(), self.max_num_seqs.to_string()]);
        }
        if let Some(t) = self.max_num_batched_tokens {
            parts.extend(["--max-num-batched-tokens".into(), t.to_string()]);
        }
        if let Some(kv) = self.kv_cache_tokens {
            parts.extend(["--kv-cache-tokens".into(), kv.to_string()]);
        }
        if self.no_chunked_prefill {
            parts.push("--no-chunked-prefill".into());
        }
        if self.leave_one_out {
            parts.push("--leave-one-out".into());
        }
        if self.quadratic_prefill {
            parts.push("--quadratic-prefill".into());
        }
        if self.min_r2 != DEFAULT_MIN_R2 {
            parts.extend(["--min-r2".into(), self.min_r2.to_string()]);
        }
        for rule in &self.exclude {
            parts.extend(["--exclude".into(), shell_word(&rule.to_string())]);
        }
        if self.no_default_excludes {
            parts.push("--no-default-excludes".into());
        }
        if let Some(dir) = &self.out_dir {
            parts.extend(["--out-dir".into(), shell_word(&dir.display().to_string())]);
        }
        parts.join(" ")
    }

    /// The Splitwise exclusion rules in effect: the defaults (unless disabled), then `--exclude`.
    pub fn exclusion_rules(&self) -> Vec<ExcludeRule> {
        let mut rules = if self.no_default_excludes { Vec::new() } else { default_excludes() };
        rules.extend(self.exclude.iter().cloned());
        rules
    }

    /// The engine settings the benchmarked server ran with.
    fn engine(&self) -> anyhow::Result<EngineSpec> {
        if let Some(kv) = self.kv_cache_tokens
            && !(kv.is_finite() && kv > 0.0 && kv <= 1e10)
        {
            bail!("--kv-cache-tokens {kv}: must be a positive number of tokens");
        }
        Ok(EngineSpec {
            max_num_batched_tokens: self.max_num_batched_tokens,
            chunked_prefill: self.no_chunked_prefill.then_some(false),
            kv_cache_tokens: self.kv_cache_tokens,
            ..EngineSpec::default()
        })
    }
}

fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The SLO pairs checked by default (docs/latency-model.md): an interactive one and a relaxed one.
pub const DEFAULT_SLOS: [&str; 2] = ["interactive=ttft:p90:200,itl:mean:15", "relaxed=ttft:p90:1000,itl:p90:50"];

/// `NAME=ttft:p90:200,itl:mean:15`.
pub fn parse_slo(spec: &str) -> anyhow::Result<(String, Slo)> {
    let (name, body) =
        spec.split_once('=').ok_or_else(|| anyhow!("--slo {spec:?}: expected NAME=ttft:STAT:MS,itl:STAT:MS"))?;
    let mut slo = Slo::default();
    for part in body.split(',') {
        let fields: Vec<&str> = part.split(':').collect();
        let [metric, stat, ms] = fields.as_slice() else {
            bail!("--slo {spec:?}: {part:?} is not METRIC:STAT:MS");
        };
        let statistic = match *stat {
            "mean" => Statistic::Mean,
            "p50" => Statistic::P50,
            "p90" => Statistic::P90,
            "p95" => Statistic::P95,
            "p99" => Statistic::P99,
            other => bail!("--slo {spec:?}: unknown statistic {other:?} (mean, p50, p90, p95, p99)"),
        };
        let ms: f64 = ms.parse().map_err(|_| anyhow!("--slo {spec:?}: {ms:?} is not a number of ms"))?;
        if !(ms.is_finite() && ms > 0.0) {
            bail!("--slo {spec:?}: target {ms} must be a positive number of ms");
        }
        let target = Target { ms, statistic, over: ItlPopulation::Request };
        match *metric {
            "ttft" => slo.ttft = Some(target),
            "itl" => slo.itl = Some(target),
            other => bail!("--slo {spec:?}: unknown metric {other:?} (ttft, itl)"),
        }
    }
    Ok((name.to_string(), slo))
}

/// What the files hold.
enum Input {
    Splitwise(String, PathBuf),
    Measurements(Vec<Measurement>, Option<String>),
}

/// Read the files into one kind of input; the mix of a run is its file's stem.
fn read_inputs(args: &FitArgs) -> anyhow::Result<Input> {
    let mut measurements = Vec::new();
    let mut model = None;
    let mut splitwise = None;
    for path in &args.data {
        let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let source = path.display().to_string();
        let mix = path.file_stem().map_or_else(|| source.clone(), |s| s.to_string_lossy().into_owned());
        let format = match args.format {
            DataFormat::Auto => detect(&text).ok_or_else(|| {
                anyhow!("{source}: not a format `allot fit` knows (GuideLLM CSV or JSON, vllm bench serve JSON, Splitwise CSV); give --format")
            })?,
            f => f,
        };
        match format {
            DataFormat::Splitwise => {
                if args.data.len() > 1 {
                    bail!("Splitwise data is one file; got {}", args.data.len());
                }
                splitwise = Some((text, path.clone()));
            }
            DataFormat::GuidellmCsv => measurements.extend(guidellm::parse_csv(&text, &source, &mix)?),
            DataFormat::GuidellmJson => {
                let value: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| format!("{source}: not JSON"))?;
                model = model.or_else(|| guidellm::json_model(&value));
                measurements.extend(guidellm::parse_json(&value, &source, &mix)?);
            }
            DataFormat::VllmBench => {
                let value: serde_json::Value = serde_json::from_str(&vllm_bench::sanitize(&text))
                    .with_context(|| format!("{source}: not JSON"))?;
                model = model.or_else(|| vllm_bench::model(&value));
                // A sweep of runs is one mix unless the files say otherwise.
                measurements.push(vllm_bench::parse(&value, &source, "vllm-bench")?);
            }
            DataFormat::Auto => unreachable!("resolved above"),
        }
    }
    Ok(match splitwise {
        Some((text, path)) => Input::Splitwise(text, path),
        None => Input::Measurements(measurements, model),
    })
}

/// The format of a file's content.
pub fn detect(text: &str) -> Option<DataFormat> {
    if guidellm::is_csv(text) {
        return Some(DataFormat::GuidellmCsv);
    }
    let first_line = text.lines().next().unwrap_or("");
    if first_line.contains("prompt_time") && first_line.contains("token_time") {
        return Some(DataFormat::Splitwise);
    }
    let value: serde_json::Value = serde_json::from_str(&vllm_bench::sanitize(text)).ok()?;
    if guidellm::is_json(&value) {
        Some(DataFormat::GuidellmJson)
    } else if vllm_bench::is_result(&value) {
        Some(DataFormat::VllmBench)
    } else {
        None
    }
}

/// Run `allot fit`.
pub fn run(args: &FitArgs) -> anyhow::Result<()> {
    if !(args.min_r2.is_finite() && args.min_r2 <= 1.0) {
        bail!("--min-r2 {}: must be a finite number ≤ 1", args.min_r2);
    }
    let profiles = match read_inputs(args)? {
        Input::Splitwise(text, path) => run_splitwise(args, &text, &path)?,
        Input::Measurements(measurements, model) => vec![run_measurements(args, measurements, model)?],
    };
    if let Some(dir) = &args.out_dir {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    for (file_name, profile) in &profiles {
        let text = profile_file_text(profile)?;
        if let Some(dir) = &args.out_dir {
            write_file(&dir.join(file_name), &text)?;
        }
        if args.print {
            writeln!(stdout, "---\n{text}")?;
        }
    }
    if let Some(dir) = &args.out_dir {
        eprintln!("wrote {} profile(s) to {}", profiles.len(), dir.display());
    }
    Ok(())
}

/// Write the report to stdout, or stderr when the profiles go to stdout.
fn emit(args: &FitArgs, text: &str) -> anyhow::Result<()> {
    if args.print {
        std::io::stderr().lock().write_all(text.as_bytes())?;
    } else {
        std::io::stdout().lock().write_all(text.as_bytes())?;
    }
    Ok(())
}

fn run_measurements(
    args: &FitArgs,
    measurements: Vec<Measurement>,
    model: Option<String>,
) -> anyhow::Result<(String, ProfileSpec)> {
    let engine_spec = args.engine()?;
    let engine = engine_spec.resolve(args.max_num_seqs, args.tp.unwrap_or(1));
    let slo_specs: Vec<String> =
        if args.slos.is_empty() { DEFAULT_SLOS.iter().map(|s| s.to_string()).collect() } else { args.slos.clone() };
    let slos = slo_specs.iter().map(|s| parse_slo(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let request = FitRequest {
        measurements: measurements.clone(),
        engine,
        free: FreeParameters::default(),
        slos,
        leave_one_mix_out: args.leave_one_out,
    };
    let report = fit_report(&request).map_err(|e| anyhow!("no profile: {e}"))?;
    emit(args, &report_text(&report, &measurements, &engine))?;
    let model = args.model.clone().or(model).unwrap_or_else(|| "model".into());
    let accelerator = args.accelerator.clone().unwrap_or_else(|| "gpu".into());
    let tp = args.tp.unwrap_or(1);
    let name = format!("{model}/{accelerator}/tp{tp}");
    let file_name = format!("{}_{}_tp{tp}.yaml", file_part(&model), file_part(&accelerator));
    Ok((file_name, measured_profile(&name, &report, &measurements, engine_spec, args)))
}

/// `Qwen/Qwen2.5-14B` → `Qwen-Qwen2.5-14B`.
fn file_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect()
}

fn measured_profile(
    name: &str,
    report: &FitReport,
    measurements: &[Measurement],
    engine: EngineSpec,
    args: &FitArgs,
) -> ProfileSpec {
    let mut params = report.params;
    for (v, _) in params_mut(&mut params) {
        *v = round_sig(*v, SIGNIFICANT_DIGITS);
    }
    let mixes: std::collections::BTreeSet<&str> = measurements.iter().map(|m| m.mix.as_str()).collect();
    let mut notes = vec![format!(
        "fitted through the planner's prediction path on {} of {} runs in {} mix(es); in-sample MAPE: {}",
        report.used.len(),
        measurements.len(),
        mixes.len(),
        mape_line(&report.mape)
    )];
    for e in &report.excluded {
        notes.push(format!("not used: {}: {}", e.label, e.reason));
    }
    if !report.leave_one_out.is_empty() {
        notes.push(format!("leave one mix out: {}", lomo_summary(&report.leave_one_out)));
    }
    if args.kv_cache_tokens.is_none() {
        notes.push("KV-cache size not given: variants should set engine.kv_cache_tokens or kv_cache_memory".into());
    }
    let max_concurrency = measurements
        .iter()
        .filter(|m| report.used.contains(&m.label))
        .filter_map(|m| m.concurrency)
        .fold(0.0, f64::max);
    ProfileSpec {
        name: name.to_string(),
        params,
        max_batch_profiled: Some(max_concurrency.ceil().max(1.0) as u32),
        engine: Some(EngineSpec { kv_cache_memory: None, block_size_tokens: None, ..engine }),
        provenance: Some(Provenance {
            source: args.data.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            command: Some(args.command_line()),
            data_selector: None,
            itl_fit: None,
            prefill_fit: None,
            notes,
        }),
    }
}

fn params_mut(p: &mut crate::analyze::LatencyParams) -> [(&mut f64, &'static str); 10] {
    [
        (&mut p.alpha_ms, "alpha_ms"),
        (&mut p.beta_ms, "beta_ms"),
        (&mut p.gamma_ms, "gamma_ms"),
        (&mut p.delta_ms, "delta_ms"),
        (&mut p.prefill_quadratic_ms, "prefill_quadratic_ms"),
        (&mut p.itl_context_ms, "itl_context_ms"),
        (&mut p.itl_quadratic_ms, "itl_quadratic_ms"),
        (&mut p.ttft_overhead_ms, "ttft_overhead_ms"),
        (&mut p.scheduling_delay_steps, "scheduling_delay_steps"),
        (&mut p.roofline_exponent, "roofline_exponent"),
    ]
}

fn mape_line(mape: &BTreeMap<Stat, f64>) -> String {
    mape.iter().map(|(s, m)| format!("{} {:.1} %", s.as_str(), 100.0 * m)).collect::<Vec<_>>().join(", ")
}

/// "interactive: 14/16 within ±10 %, worst optimistic +4 %; …".
pub fn lomo_summary(checks: &[MixCheck]) -> String {
    let mut by_slo: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for c in checks {
        for cap in &c.capacities {
            if let Some(e) = cap.relative_error {
                by_slo.entry(cap.slo.as_str()).or_default().push(e);
            }
        }
    }
    by_slo
        .iter()
        .map(|(slo, errors)| {
            let within = errors.iter().filter(|e| e.abs() <= 0.10).count();
            let worst = errors.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{slo}: {within}/{} mixes within ±10 %, most optimistic {:+.0} %", errors.len(), 100.0 * worst)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The report a user reads: the parameters, each run (used or why not) with its residuals, the
/// error summary, and per-mix capacity checks.
pub fn report_text(report: &FitReport, measurements: &[Measurement], engine: &EngineLimits) -> String {
    let mut out = String::new();
    let p = &report.params;
    let _ = writeln!(
        out,
        "profile: α {:.4} ms, β {:.5} ms/req, η {:.3e} ms/token, ζ {:.3e} ms/req², γ {:.3} ms, δ {:.5} ms/token, \
         ε {:.3e} ms/token², TTFT overhead {:.2} ms, scheduling delay {:.2} steps, roofline r {:.2} ({} \
         iterations)",
        p.alpha_ms,
        p.beta_ms,
        p.itl_context_ms,
        p.itl_quadratic_ms,
        p.gamma_ms,
        p.delta_ms,
        p.prefill_quadratic_ms,
        p.ttft_overhead_ms,
        p.scheduling_delay_steps,
        p.roofline_exponent,
        report.iterations
    );
    let _ = writeln!(
        out,
        "engine assumed: max_num_seqs {}, max_num_batched_tokens {}, chunked prefill {}, KV cache {}",
        engine.max_num_seqs,
        engine.max_num_batched_tokens,
        if engine.chunked_prefill { "on" } else { "off" },
        engine.kv_cache_tokens.map_or("unknown".into(), |k| format!("{k:.0} tokens"))
    );
    let _ = writeln!(out, "\n{:<44} {:>9}   measured → predicted (error)", "run", "req/s");
    let mut by_label: BTreeMap<&str, Vec<&crate::analyze::fit::through_model::PointResidual>> = BTreeMap::new();
    for r in &report.residuals {
        by_label.entry(r.label.as_str()).or_default().push(r);
    }
    for m in measurements {
        let rate = match m.load {
            Load::Synchronous => "lone".to_string(),
            _ => format!("{:.3}", m.achieved_rps),
        };
        match by_label.get(m.label.as_str()) {
            Some(rs) => {
                let cells: Vec<String> = rs
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {:.1} → {:.1} ({:+.0} %)",
                            r.stat.as_str(),
                            r.measured_ms,
                            r.predicted_ms,
                            100.0 * r.relative_error
                        )
                    })
                    .collect();
                let _ = writeln!(out, "{:<44} {:>9}   {}", m.label, rate, cells.join("; "));
            }
            None => {
                let reason =
                    report.excluded.iter().find(|e| e.label == m.label).map_or("not used", |e| e.reason.as_str());
                let _ = writeln!(out, "{:<44} {:>9}   NOT USED: {reason}", m.label, rate);
            }
        }
    }
    let _ = writeln!(out, "\nin-sample MAPE: {}", mape_line(&report.mape));
    let worst: Vec<String> = {
        let mut rs: Vec<&crate::analyze::fit::through_model::PointResidual> = report.residuals.iter().collect();
        rs.sort_by(|a, b| b.relative_error.abs().total_cmp(&a.relative_error.abs()));
        rs.iter()
            .take(5)
            .map(|r| format!("{} {} {:+.0} %", r.label, r.stat.as_str(), 100.0 * r.relative_error))
            .collect()
    };
    let _ = writeln!(out, "largest residuals: {}", worst.join("; "));
    for (title, checks) in [("in sample", &report.in_sample), ("leaving each mix out", &report.leave_one_out)] {
        if checks.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\ncapacity at SLO per mix, {title} (measured → predicted req/s):");
        for c in checks {
            let caps: Vec<String> = c
                .capacities
                .iter()
                .map(|cap| {
                    let measured = if cap.measured.censored {
                        format!("≥{:.3}", cap.measured.rps)
                    } else {
                        format!("{:.3}", cap.measured.rps)
                    };
                    let error = cap.relative_error.map_or(String::new(), |e| format!(" ({:+.0} %)", 100.0 * e));
                    format!("{} {measured} → {:.3}{error}", cap.slo, cap.predicted_rps)
                })
                .collect();
            let _ = writeln!(out, "  {:<24} {} | MAPE {}", c.mix, caps.join("; "), mape_line(&c.mape));
        }
        if title != "in sample" {
            let _ = writeln!(out, "  summary: {}", lomo_summary(checks));
        }
    }
    out
}

/// The Splitwise path: one profile per (model, hardware, TP) group.
fn run_splitwise(args: &FitArgs, text: &str, path: &Path) -> anyhow::Result<Vec<(String, ProfileSpec)>> {
    let rows = parse_splitwise(text, &path.display().to_string())?;
    let filter =
        GroupFilter { model: args.model.clone(), hardware: args.accelerator.clone(), tensor_parallel: args.tp };
    let groups = group_splitwise(&rows, &filter, &args.exclusion_rules());
    if groups.is_empty() {
        bail!("{}: no rows match the filters", path.display());
    }
    let identical = cross_group_notes(&groups);
    let options = FitOptions { min_r2: args.min_r2 };
    let command = args.command_line();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model        hardware         tp     α ms  β ms/req     η ms/tok  R² ITL  MAPE     γ ms  δ ms/tok    ε ms/tok²  R² pre  MAPE"
    );
    let mut profiles = Vec::new();
    for (group, same) in groups.iter().zip(&identical) {
        match fit_group(group, args.quadratic_prefill, &options, same) {
            Ok(fit) => {
                let (i, p) = (&fit.itl, &fit.prefill);
                let eps = if p.quadratic { format!("{:>11.3e}", p.epsilon_ms) } else { format!("{:>11}", "-") };
                let _ = writeln!(
                    out,
                    "{:<12} {:<16} {:>2} {:>8.2} {:>9.4} {:>12.3e} {:>7.4} {:>5.1}% {:>8.2} {:>9.5} {eps} {:>7.4} {:>4.1}%",
                    group.key.model,
                    group.key.hardware,
                    group.key.tensor_parallel,
                    i.alpha_ms,
                    i.beta_ms,
                    i.eta_ms,
                    i.fit.quality.r2,
                    100.0 * i.fit.quality.mape,
                    p.gamma_ms,
                    p.delta_ms,
                    p.fit.quality.r2,
                    100.0 * p.fit.quality.mape,
                );
                let worst: Vec<String> =
                    largest_residuals(&i.fit.residuals, 3).iter().map(|r| format!("{:+.2}", r.residual_ms)).collect();
                let _ = writeln!(out, "    largest ITL residuals (ms): {}", worst.join(", "));
                for note in fit.notes.iter().filter(|n| n.contains("clamped") || n.starts_with("excluded")) {
                    let _ = writeln!(out, "    note: {note}");
                }
                profiles.push((group.key.file_name(), to_profile(&fit, SPLITWISE_SOURCE, &command)));
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{:<12} {:<16} {:>2} SKIPPED: {e}",
                    group.key.model, group.key.hardware, group.key.tensor_parallel
                );
            }
        }
    }
    emit(args, &out)?;
    if profiles.is_empty() {
        bail!("every group failed to fit; no profile written");
    }
    Ok(profiles)
}

/// The text of a profile file: a header comment and the YAML document, newline-terminated.
pub fn profile_file_text(profile: &ProfileSpec) -> anyhow::Result<String> {
    let yaml =
        serde_saphyr::to_string(profile).with_context(|| format!("cannot serialize profile {}", profile.name))?;
    let newline = if yaml.ends_with('\n') { "" } else { "\n" };
    Ok(format!("# Generated by `allot fit`; regenerate with provenance.command rather than editing.\n{yaml}{newline}"))
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(data: &[&str]) -> FitArgs {
        FitArgs {
            data: data.iter().map(PathBuf::from).collect(),
            format: DataFormat::Auto,
            model: None,
            accelerator: None,
            tp: None,
            max_num_seqs: 1024,
            max_num_batched_tokens: None,
            kv_cache_tokens: None,
            no_chunked_prefill: false,
            slos: Vec::new(),
            leave_one_out: false,
            quadratic_prefill: false,
            min_r2: DEFAULT_MIN_R2,
            exclude: Vec::new(),
            no_default_excludes: false,
            out_dir: None,
            print: false,
        }
    }

    #[test]
    fn command_line_is_reproducible() {
        let mut a = args(&["models/data/splitwise_perf_model.csv"]);
        a.tp = Some(8);
        a.quadratic_prefill = true;
        a.exclude = vec!["*:*:64".parse().expect("rule")];
        a.out_dir = Some("models".into());
        assert_eq!(
            a.command_line(),
            "allot fit --data models/data/splitwise_perf_model.csv --tp 8 --quadratic-prefill --exclude '*:*:64' \
             --out-dir models"
        );
        assert_eq!(a.exclusion_rules().len(), 2);
    }

    #[test]
    fn slo_specs_parse_or_say_why_not() {
        let (name, slo) = parse_slo("interactive=ttft:p90:200,itl:mean:15").expect("valid");
        assert_eq!(name, "interactive");
        assert_eq!(slo.ttft, Some(Target::new(200.0, Statistic::P90)));
        assert_eq!(slo.itl, Some(Target::new(15.0, Statistic::Mean)));
        for bad in ["x", "x=ttft:p90", "x=ttft:p42:10", "x=tpot:p90:10", "x=ttft:p90:-1", "x=ttft:p90:abc"] {
            assert!(parse_slo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_are_detected_from_content() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/data");
        let read = |p: &str| fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(detect(&read("guidellm-exp2/sweep-i64-o64.csv")), Some(DataFormat::GuidellmCsv));
        assert_eq!(detect(&read("guidellm-json/qwen2.5-0.5b-sweep.json")), Some(DataFormat::GuidellmJson));
        assert_eq!(detect(&read("splitwise_perf_model.csv")), Some(DataFormat::Splitwise));
        assert_eq!(
            detect("{\"request_throughput\": 1, \"mean_ttft_ms\": 3, \"request_rate\": Infinity}"),
            Some(DataFormat::VllmBench)
        );
        assert_eq!(detect("a,b,c\n1,2,3\n"), None);
    }
}
