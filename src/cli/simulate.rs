//! `allot simulate`: replay a trace through a simulated fleet under each policy and compare.
//! This is the adapter: it reads the files; everything it calls in `sim` is pure.

use std::io::{IsTerminal as _, Write as _};
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
    /// Request trace as published: Azure LLM inference CSV, BurstGPT CSV, Mooncake JSONL, or
    /// Allot's JSONL (docs/evaluation.md).
    #[arg(long)]
    pub trace: PathBuf,
    /// Trace format; by default detected from the content.
    #[arg(long, value_enum)]
    pub trace_format: Option<TraceFormatArg>,
    /// Unit of a JSONL trace's `timestamp` (default: ms in Mooncake's rows, else s; fields
    /// `timestamp_s` and `timestamp_ms` say their own).
    #[arg(long, value_enum)]
    pub time_unit: Option<TimeUnitArg>,
    /// Spread binned arrival times: move each arrival later by a seeded uniform draw in
    /// [0, JITTER_S) (Mooncake bins to ~3 s, BurstGPT to 1 s; 0 ≤ s ≤ 3600).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = Number::within(0.0, 3600.0))]
    pub jitter_s: f64,
    /// Policies to compare, comma-separated, each once: allot, hpa, keda, wva, static.
    #[arg(long, value_delimiter = ',', default_value = "allot,hpa,keda,wva,static")]
    pub policy: Vec<PolicyKind>,
    /// Replay the trace this many times faster (3 = three times the request rate; 0 < x ≤ 1000).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = Number::above(0.0, 1000.0))]
    pub rate_scale: f64,
    /// Cut a time window: skip the trace's first seconds (0 ≤ s ≤ 10^9).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = Number::within(0.0, 1e9))]
    pub start_s: f64,
    /// Cut a time window: replay only this many trace seconds after `--start-s`, before rate
    /// scaling (0 < s ≤ 10^9).
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
    /// Step token budget (vLLM `max_num_batched_tokens`) of every variant, replacing the
    /// scenario's `engine` settings.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_batched_tokens: Option<u32>,
    /// Run every variant without chunked prefill (whole prompts per step), replacing the
    /// scenario's `engine` settings; vLLM V1 and the default chunk.
    #[arg(long)]
    pub no_chunked_prefill: bool,
    /// KV-cache hand-off from prefill to decode replicas, milliseconds (0 ≤ ms ≤ 60000).
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true, value_parser = Number::within(0.0, 60_000.0))]
    pub kv_handoff_ms: f64,
    /// Requests that find no ready replica are dropped after this long, seconds (0 ≤ s ≤ 86400).
    #[arg(long, default_value_t = 60.0, allow_negative_numbers = true, value_parser = DAY_OR_LESS)]
    pub drop_after_s: f64,
    /// The simulated servers run this many times the profile's step times (1.3: the scenario's
    /// profiles are 30 % optimistic; 0.1 ≤ x ≤ 10): a truth no policy is told, to see how each
    /// copes with a wrong profile (Allot's loop calibrates against it).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = Number::within(0.1, 10.0))]
    pub true_latency_factor: f64,
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
    /// Allot's loop controls as YAML (calibration, forecast, start-up, panic, scale to zero,
    /// schedules; the `controls` of `allot-config`, docs/controller.md); defaults without it.
    #[arg(long)]
    pub controls: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress or notes on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Bounds of the flags that take seconds up to a day.
const DAY_OR_LESS: Number = Number::within(0.0, 86_400.0);

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TraceFormatArg {
    Azure,
    Burstgpt,
    /// Allot's JSONL or Mooncake's.
    Jsonl,
}

impl From<TraceFormatArg> for trace::TraceFormat {
    fn from(f: TraceFormatArg) -> Self {
        match f {
            TraceFormatArg::Azure => trace::TraceFormat::Azure,
            TraceFormatArg::Burstgpt => trace::TraceFormat::BurstGpt,
            TraceFormatArg::Jsonl => trace::TraceFormat::Jsonl,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TimeUnitArg {
    S,
    Ms,
}

impl From<TimeUnitArg> for trace::TimeUnit {
    fn from(u: TimeUnitArg) -> Self {
        match u {
            TimeUnitArg::S => trace::TimeUnit::Seconds,
            TimeUnitArg::Ms => trace::TimeUnit::Milliseconds,
        }
    }
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
    let mut parsed_scenario = match scenario::parse(&scenario_text) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {e}", args.file.display())),
    };
    for v in &mut parsed_scenario.variants {
        let engine = v.engine.get_or_insert_with(Default::default);
        if let Some(tokens) = args.max_batched_tokens {
            engine.max_num_batched_tokens = Some(tokens);
        }
        if args.no_chunked_prefill {
            engine.chunked_prefill = Some(false);
        }
    }
    let snapshot = match scenario::validate(&parsed_scenario) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {e}", args.file.display())),
    };
    let trace_text = match std::fs::read_to_string(&args.trace) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {}: {e}", args.trace.display())),
    };
    let parsed = match trace::parse(&trace_text, args.trace_format.map(Into::into), args.time_unit.map(Into::into)) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", args.trace.display())),
    };
    if let Some(duplicate) = args.policy.iter().enumerate().find_map(|(i, p)| args.policy[..i].contains(p).then_some(p))
    {
        return fail(format!("--policy: {} is given more than once", duplicate.as_str()));
    }
    let jittered =
        if args.jitter_s > 0.0 { trace::jitter(&parsed.requests, args.jitter_s, args.seed) } else { parsed.requests };
    if !args.quiet {
        let what = format!("{}: {} ({} requests)", args.trace.display(), parsed.format.as_str(), jittered.len());
        super::say(&what);
        for note in &parsed.notes {
            super::say(&format!("  {note}"));
        }
        for warning in trace::plausibility(&jittered) {
            super::say(&format!("warning: {}: {warning}", args.trace.display()));
        }
    }
    let window = Window { start_s: args.start_s, duration_s: args.duration_s, rate_scale: args.rate_scale };
    let selected = trace::select(&jittered, &window);
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
        kv_handoff_s: args.kv_handoff_ms / 1000.0,
        drop_after_s: args.drop_after_s,
        true_latency_factor: args.true_latency_factor,
        ..SimConfig::default()
    };
    let metric = match args.hpa_metric {
        MetricArg::Queue => ScaleMetric::Queue,
        MetricArg::Kv => ScaleMetric::Kv,
    };
    let default_target = if metric == ScaleMetric::Queue { 4.0 } else { 0.7 };
    let controls = match &args.controls {
        None => crate::controller::Controls::default(),
        Some(path) => match read_controls(path) {
            Ok(c) => c,
            Err(e) => return fail(e),
        },
    };
    let settings = PolicySettings {
        metric,
        target: args.hpa_target.unwrap_or(default_target),
        scale_down_window_s: args.scale_down_window_s,
        controls,
        ..PolicySettings::default()
    };
    let policies = args.policy.clone();

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
    let bar = !args.quiet && std::io::stderr().is_terminal();
    for (i, &kind) in policies.iter().enumerate() {
        let started = std::time::Instant::now();
        let label = format!("[{}/{}] {}", i + 1, policies.len(), kind.as_str());
        let mut progress = |fraction: f64| {
            if bar {
                let _ = write!(std::io::stderr().lock(), "\r{}", progress_line(&label, fraction, started.elapsed()));
            }
        };
        runs.push(sim::simulate(kind, &parsed_scenario, &snapshot, &requests, &config, &settings, &mut progress));
        if bar {
            let _ = writeln!(std::io::stderr().lock(), "\r{}", progress_line(&label, 1.0, started.elapsed()));
        } else if !args.quiet {
            eprintln!("{label}: simulated in {:.1} s", started.elapsed().as_secs_f64());
        }
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

/// Loop controls from a YAML file, every problem named.
fn read_controls(path: &std::path::Path) -> Result<crate::controller::Controls, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let controls: crate::controller::Controls =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let problems = controls.problems();
    if problems.is_empty() { Ok(controls) } else { Err(format!("{}: {}", path.display(), problems.join("; "))) }
}

/// One line of the terminal progress bar: label, bar, percent, elapsed and remaining time.
fn progress_line(label: &str, fraction: f64, elapsed: std::time::Duration) -> String {
    const WIDTH: usize = 30;
    let fraction = fraction.clamp(0.0, 1.0);
    let filled = (fraction * WIDTH as f64).round() as usize;
    let elapsed_s = elapsed.as_secs_f64();
    let left = if fraction > 0.0 && fraction < 1.0 {
        format!(", ~{:.0} s left", elapsed_s * (1.0 - fraction) / fraction)
    } else {
        String::new()
    };
    format!(
        "{label:<16} [{}{}] {:>3.0} %  {elapsed_s:.1} s{left}   ",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        100.0 * fraction
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_bar_fills_with_the_fraction_done() {
        let half = progress_line("[1/2] allot", 0.5, std::time::Duration::from_secs(4));
        assert!(half.contains("[###############---------------]  50 %  4.0 s, ~4 s left"), "{half}");
        let done = progress_line("[2/2] hpa", 1.0, std::time::Duration::from_secs(8));
        assert!(done.contains(&format!("[{}] 100 %  8.0 s   ", "#".repeat(30))), "{done}");
    }
}
