//! Command-line front end: `allot plan`, `allot fit`, `allot serve`.

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
    /// Serve the REST API (dry-run plans, health, OpenAPI).
    Serve(crate::api::ServeArgs),
    /// Replay a request trace through a simulated fleet and compare scaling policies.
    Simulate(simulate::SimulateArgs),
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
    let snapshot = match scenario::load(&text) {
        Ok(s) => s,
        Err(e) => {
            report_load_error(&source, &e);
            return ExitCode::from(EXIT_INVALID_INPUT);
        }
    };
    let plan = crate::optimize::plan(&snapshot);
    let rendered = match args.format {
        OutputFormat::Table => table::render(&plan),
        OutputFormat::Json => serde_json::to_string_pretty(&plan).expect("plans serialize") + "\n",
        OutputFormat::Yaml => serde_saphyr::to_string(&plan).expect("plans serialize"),
    };
    print!("{rendered}");
    ExitCode::SUCCESS
}

fn report_load_error(source: &str, e: &LoadError) {
    eprintln!("error: {source}: {e}");
}
