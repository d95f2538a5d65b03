use std::process::ExitCode;

use allot::cli::{Cli, Command};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plan(args) => allot::cli::plan(&args),
        Command::Serve(args) => allot::api::run(args),
        Command::Simulate(args) => allot::cli::simulate::simulate(&args),
    }
}
