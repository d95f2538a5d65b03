//! Command-line front end: `allot plan`, `allot fit`, `allot serve`, `allot simulate`, `allot crds`.

pub mod bounds;
pub mod fit;
pub mod predict;
pub mod serve;
pub mod simulate;
pub mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::scenario::{self, LoadError};

/// The scenario `allot plan` runs when no file is given: the bundled heterogeneous fleet.
pub const DEFAULT_SCENARIO: &str = include_str!("../../examples/heterogeneous.yaml");

#[derive(Debug, Parser)]
#[command(name = "allot", version, about = "Global placement optimizer for LLM inference replicas")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan a scenario offline (dry run) and print the plan.
    Plan(PlanArgs),
    /// Fit latency profiles (α, β, γ, δ, ε) from benchmark data.
    Fit(fit::FitArgs),
    /// Predict latency at given arrival rates, and each class's capacity at its SLO.
    Predict(predict::PredictArgs),
    /// Print a synthetic fleet scenario (the benchmark fleets) as YAML.
    Generate(GenerateArgs),
    /// Serve the REST API (dry-run plans, health, OpenAPI).
    Serve(Box<serve::ServeArgs>),
    /// Replay a request trace through a simulated fleet and compare scaling policies.
    Simulate(simulate::SimulateArgs),
    /// Print the VariantAutoscaling CRD as YAML, or write it into a directory.
    Crds(CrdsArgs),
}

#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write `variantautoscalings.llmd.ai.yaml` into this directory instead of printing it.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Scenario file (YAML or JSON; WVA optimizer JSON is accepted too). Default: the bundled
    /// heterogeneous example.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Print HiGHS's own log on stderr (`ALLOT_HIGHS_LOG=1`).
    #[arg(long, env = "ALLOT_HIGHS_LOG", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub highs_log: bool,
    /// Extra HiGHS options for experiments: `name=value` pairs separated by commas.
    #[arg(long, env = "ALLOT_HIGHS_OPTIONS", value_parser = crate::optimize::solver::check_highs_options)]
    pub highs_options: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Fleet size: small (20 models, 80 variants, 8 types), medium (100, 500, 10), large (250, 2,500, 20).
    #[arg(long, value_enum, default_value_t = FleetSize::Small)]
    pub size: FleetSize,
    /// Give the fleet too few GPUs (60 % of what its demand needs), so the fair-share phases run.
    #[arg(long)]
    pub scarce: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FleetSize {
    Small,
    Medium,
    Large,
}

pub fn generate(args: &GenerateArgs) -> ExitCode {
    use crate::synthetic::{FleetSpec, fleet};
    let spec = match args.size {
        FleetSize::Small => FleetSpec::SMALL,
        FleetSize::Medium => FleetSpec::MEDIUM,
        FleetSize::Large => FleetSpec::LARGE,
    };
    let spec = if args.scarce { spec.scarce() } else { spec };
    emit(&serde_saphyr::to_string(&fleet(spec)).expect("scenarios serialize"))
}

/// Write a command's output to stdout. A reader that goes away (`allot plan | head -c1`) ends the
/// command quietly, as `head` expects, instead of a panic.
pub fn emit(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("error: cannot write the output: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// A line on stderr for the user; input it quotes is escaped for the terminal, and a closed
/// stderr is not a panic.
pub fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{}", scenario::for_terminal(line));
}

/// Exit code for input the user must fix.
pub const EXIT_INVALID_INPUT: u8 = 2;

/// The scenario of `-f FILE`, or the bundled example; a problem is reported and is the exit code.
pub fn read_scenario(file: Option<&std::path::Path>) -> Result<crate::scenario::Snapshot, ExitCode> {
    let text = match file {
        None => DEFAULT_SCENARIO.to_string(),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                say(&format!("error: cannot read {}: {e}", path.display()));
                return Err(ExitCode::from(EXIT_INVALID_INPUT));
            }
        },
    };
    let source = file.map_or("bundled example".to_string(), |p| p.display().to_string());
    scenario::load(&text).map_err(|e| {
        report_load_error(&source, &e);
        ExitCode::from(EXIT_INVALID_INPUT)
    })
}

pub fn plan(args: &PlanArgs) -> ExitCode {
    let snapshot = match read_scenario(args.file.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut options = crate::optimize::PlanOptions::default();
    if args.highs_log {
        // stderr: stdout carries the plan (`--format json` must stay parseable).
        options.solver.log = Some(|line: &str| eprintln!("{line}"));
    }
    if let Some(highs) = &args.highs_options {
        options.solver.highs = crate::optimize::solver::parse_highs_options(highs);
    }
    let plan = crate::optimize::plan_with(&snapshot, None, &options);
    let rendered = match args.format {
        OutputFormat::Table => table::render(&plan),
        OutputFormat::Json => serde_json::to_string_pretty(&plan).expect("plans serialize") + "\n",
        OutputFormat::Yaml => serde_saphyr::to_string(&plan).expect("plans serialize"),
    };
    emit(&rendered)
}

pub fn crds(args: &CrdsArgs) -> ExitCode {
    let yaml = crate::k8s::crd::crd_yaml();
    let Some(dir) = &args.out_dir else {
        return emit(&yaml);
    };
    let path = dir.join(crate::k8s::crd::CRD_FILE_NAME);
    match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, yaml)) {
        Ok(()) => {
            say(&format!("wrote {}", path.display()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("error: cannot write {}: {e}", path.display()));
            ExitCode::FAILURE
        }
    }
}

fn report_load_error(source: &str, e: &LoadError) {
    say(&format!("error: {source}: {e}"));
}
