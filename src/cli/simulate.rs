//! `allot simulate`: replay a trace through a simulated fleet under each policy and compare.
//! This is the adapter: it reads the files; everything it calls in `sim` is pure.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use super::EXIT_INVALID_INPUT;
use super::bounds::Number;
use crate::scenario;
use crate::sim::policy::ScaleMetric;
use crate::sim::trace::{self, Rule, Window};
use crate::sim::{self, PolicyKind, PolicySettings, SimConfig, report};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Scenario file: inventory, classes, variants, profiles. Its `load` gives the share of the
    /// trace each (model, class) gets, its `current_replicas` the fleet at t = 0.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Request trace: Azure LLM inference CSV or JSONL (`timestamp`, `input_tokens`,
    /// `output_tokens`, optional `model` and `class`).
    #[arg(long)]
    pub trace: PathBuf,
    /// Trace format; by default from the extension (`.jsonl` → jsonl, else azure).
    #[arg(long, value_enum)]
    pub trace_format: Option<TraceFormat>,
    /// Policies to compare, comma-separated: allot, hpa, keda, wva, static.
    #[arg(long, value_delimiter = ',', default_value = "allot,hpa,keda,wva,static")]
    pub policy: Vec<PolicyKind>,
    /// Replay the trace this many times faster (3 = three times the request rate; 0 < x ≤ 1000).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = Number::above(0.0, 1000.0))]
    pub rate_scale: f64,
    /// Skip the trace's first seconds (0 ≤ s ≤ 10^9).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = Number::within(0.0, 1e9))]
    pub start_s: f64,
    /// Replay only this many trace seconds, before rate scaling (0 < s ≤ 10^9).
    #[arg(long, allow_negative_numbers = true, value_parser = Number::above(0.0, 1e9))]
    pub duration_s: Option<f64>,
    /// Map requests to MODEL/CLASS by prompt length, `MODEL/CLASS[:MIN-MAX]`, first match wins;
    /// unmatched requests are drawn by the scenario's load shares.
    #[arg(long = "rule")]
    pub rules: Vec<Rule>,
    /// Seed of the share draw.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Replica start-up time (scheduling to ready), seconds (0 ≤ s ≤ 86400).
    #[arg(long, default_value_t = 120.0, allow_negative_numbers = true, value_parser = DAY_OR_LESS)]
    pub startup_s: f64,
    /// Control period of every policy, seconds (1 ≤ s ≤ 86400).
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true, value_parser = Number::within(1.0, 86_400.0))]
    pub control_period_s: f64,
    /// Age of the newest metric a policy sees, seconds (0 ≤ s ≤ 86400).
    #[arg(long, default_value_t = 15.0, allow_negative_numbers = true, value_parser = DAY_OR_LESS)]
    pub metric_lag_s: f64,
    /// Rate averaging window, seconds (1 ≤ s ≤ 86400).
    #[arg(long, default_value_t = 60.0, allow_negative_numbers = true, value_parser = Number::within(1.0, 86_400.0))]
    pub window_s: f64,
    /// Prompt tokens one step may prefill (vLLM `max_num_batched_tokens`); 0 = unlimited.
    #[arg(long, default_value_t = 8192)]
    pub max_batched_tokens: u32,
    /// Chunked prefill: split prompts to fill each step's token budget.
    #[arg(long)]
    pub chunked_prefill: bool,
    /// KV-cache hand-off from prefill to decode replicas, milliseconds (0 ≤ ms ≤ 60000).
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true, value_parser = Number::within(0.0, 60_000.0))]
    pub kv_handoff_ms: f64,
    /// Requests that find no ready replica are dropped after this long, seconds (0 ≤ s ≤ 86400).
    #[arg(long, default_value_t = 60.0, allow_negative_numbers = true, value_parser = DAY_OR_LESS)]
    pub drop_after_s: f64,
    /// HPA/KEDA metric.
    #[arg(long, value_enum, default_value_t = MetricArg::Kv)]
    pub hpa_metric: MetricArg,
    /// HPA/KEDA target per replica (default: 0.7 for kv, 4 waiting requests for queue;
    /// 0 < x ≤ 10^6).
    #[arg(long, allow_negative_numbers = true, value_parser = Number::above(0.0, 1e6))]
    pub hpa_target: Option<f64>,
    /// Scale-down stabilization window of allot, hpa and keda, seconds (0 ≤ s ≤ 86400).
    #[arg(long, default_value_t = 300.0, allow_negative_numbers = true, value_parser = DAY_OR_LESS)]
    pub scale_down_window_s: f64,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Bounds of the flags that take seconds up to a day.
const DAY_OR_LESS: Number = Number::within(0.0, 86_400.0);

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TraceFormat {
    Azure,
    Jsonl,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MetricArg {
    Queue,
    Kv,
}

fn fail(message: String) -> ExitCode {
    super::say(&format!("error: {message}"));
    ExitCode::from(EXIT_INVALID_INPUT)
}

pub fn simulate(args: &SimulateArgs) -> ExitCode {
    let scenario_text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {}: {e}", args.file.display())),
    };
    let parsed_scenario = match scenario::parse(&scenario_text) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {e}", args.file.display())),
    };
    let snapshot = match scenario::validate(&parsed_scenario) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {e}", args.file.display())),
    };
    let trace_text = match std::fs::read_to_string(&args.trace) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {}: {e}", args.trace.display())),
    };
    let format = args.trace_format.unwrap_or(if args.trace.extension().is_some_and(|x| x == "jsonl") {
        TraceFormat::Jsonl
    } else {
        TraceFormat::Azure
    });
    let parsed = match format {
        TraceFormat::Azure => trace::parse_azure_csv(&trace_text),
        TraceFormat::Jsonl => trace::parse_jsonl(&trace_text),
    };
    let parsed = match parsed {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", args.trace.display())),
    };
    let window = Window { start_s: args.start_s, duration_s: args.duration_s, rate_scale: args.rate_scale };
    let selected = trace::select(&parsed, &window);
    let requests = match trace::assign(&selected, &snapshot, &args.rules, args.seed) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return fail(format!("{}: no requests in the selected window", args.trace.display())),
        Err(e) => return fail(format!("{}: {e}", args.trace.display())),
    };
    let config = SimConfig {
        startup_s: args.startup_s,
        control_period_s: args.control_period_s,
        metric_lag_s: args.metric_lag_s,
        window_s: args.window_s,
        max_batched_tokens: (args.max_batched_tokens > 0).then_some(args.max_batched_tokens),
        chunked_prefill: args.chunked_prefill,
        kv_handoff_s: args.kv_handoff_ms / 1000.0,
        drop_after_s: args.drop_after_s,
        ..SimConfig::default()
    };
    let metric = match args.hpa_metric {
        MetricArg::Queue => ScaleMetric::Queue,
        MetricArg::Kv => ScaleMetric::Kv,
    };
    let default_target = if metric == ScaleMetric::Queue { 4.0 } else { 0.7 };
    let settings =
        PolicySettings { metric, target: args.hpa_target.unwrap_or(default_target), ..PolicySettings::default() };
    let mut policies = args.policy.clone();
    policies.dedup();

    let span_s = requests.last().map_or(0.0, |r| r.arrival_s);
    let header = format!(
        "{}: {} requests over {:.0} s ({:.2} req/s), {} policies",
        snapshot.name.as_deref().unwrap_or("scenario"),
        requests.len(),
        span_s,
        requests.len() as f64 / span_s.max(1e-9),
        policies.len()
    );
    let mut runs = Vec::new();
    for &kind in &policies {
        let mut next_report = 0.0;
        let mut progress = |fraction: f64| {
            if args.quiet || fraction + 1e-12 < next_report {
                return;
            }
            next_report = (fraction * 10.0).floor() / 10.0 + 0.1;
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{:<7} {:>3.0} %", kind.as_str(), fraction * 100.0);
            if fraction >= 1.0 {
                let _ = writeln!(err);
            }
        };
        runs.push(sim::simulate(kind, &parsed_scenario, &snapshot, &requests, &config, &settings, &mut progress));
    }
    let printed =
        super::emit(&format!("{header}\n\n{}", report::table(&runs.iter().map(|r| r.0.clone()).collect::<Vec<_>>())));
    if let Some(path) = &args.report {
        let html = report::html(&snapshot, &requests, &runs, &header);
        if let Err(e) = std::fs::write(path, html) {
            return fail(format!("cannot write {}: {e}", path.display()));
        }
        super::say(&format!("report written to {}", path.display()));
    }
    printed
}
