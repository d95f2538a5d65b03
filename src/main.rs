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
            // The reader of `allot fit --print | head` went away: not an error.
            Err(e)
                if e.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                }) =>
            {
                ExitCode::SUCCESS
            }
            Err(e) => {
                allot::cli::say(&format!("error: {e:#}"));
                ExitCode::from(allot::cli::EXIT_INVALID_INPUT)
            }
        },
        Command::Predict(args) => allot::cli::predict::run(&args),
        Command::Simulate(args) => allot::cli::simulate::simulate(&args),
        Command::Crds(args) => allot::cli::crds(&args),
    }
}
