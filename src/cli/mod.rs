//! Command-line front end: `allot plan`, `allot fit`, `allot serve`, `allot simulate`, `allot crds`.

pub mod fit;
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
    print!("{}", serde_saphyr::to_string(&fleet(spec)).expect("scenarios serialize"));
    ExitCode::SUCCESS
}

/// Exit code for input the user must fix.
pub const EXIT_INVALID_INPUT: u8 = 2;

pub fn plan(args: &PlanArgs) -> ExitCode {
    let text = match &args.file {
        None => DEFAULT_SCENARIO.to_string(),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return ExitCode::from(EXIT_INVALID_INPUT);
            }
        },
    };
    let source = args.file.as_ref().map_or("bundled example".to_string(), |p| p.display().to_string());
    let mut snapshot = match scenario::load(&text) {
        Ok(s) => s,
        Err(e) => {
            report_load_error(&source, &e);
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    snapshot.settings.solver_log = std::env::var("ALLOT_HIGHS_LOG").is_ok_and(|v| v == "1");
    if let Ok(options) = std::env::var("ALLOT_HIGHS_OPTIONS") {
        snapshot.settings.solver_options = crate::optimize::solver::parse_highs_options(&options);
    }
    let plan = crate::optimize::plan(&snapshot);
    let rendered = match args.format {
        OutputFormat::Table => table::render(&plan),
        OutputFormat::Json => serde_json::to_string_pretty(&plan).expect("plans serialize") + "\n",
        OutputFormat::Yaml => serde_saphyr::to_string(&plan).expect("plans serialize"),
    };
    print!("{rendered}");
    ExitCode::SUCCESS
}

pub fn crds(args: &CrdsArgs) -> ExitCode {
    let yaml = crate::k8s::crd::crd_yaml();
    let Some(dir) = &args.out_dir else {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    };
    let path = dir.join(crate::k8s::crd::CRD_FILE_NAME);
    match std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, yaml)) {
        Ok(()) => {
            eprintln!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn report_load_error(source: &str, e: &LoadError) {
    eprintln!("error: {source}: {e}");
}
