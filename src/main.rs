use std::process::ExitCode;

use allot::cli::{Cli, Command};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plan(args) => allot::cli::plan(&args),
        Command::Serve(args) => allot::cli::serve::run(*args),
        Command::Generate(args) => allot::cli::generate(&args),
        Command::Fit(args) => match allot::cli::fit::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(allot::cli::EXIT_INVALID_INPUT)
            }
        },
        Command::Simulate(args) => allot::cli::simulate::simulate(&args),
        Command::Crds(args) => allot::cli::crds(&args),
    }
}
