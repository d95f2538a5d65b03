//! Telemetry: Allot's metrics ([`metrics`]), vLLM's metric conventions ([`vllm`]) and logging.

pub mod metrics;
pub mod vllm;

pub use metrics::Metrics;

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Colour log lines only on a terminal, and never with `NO_COLOR` set (no escape codes in files,
/// `kubectl logs` or log shippers).
pub fn use_colour(stderr_is_terminal: bool, no_color: bool) -> bool {
    stderr_is_terminal && !no_color
}

/// A log filter as `--log-level` and `RUST_LOG` take it (`info`, `allot=debug,kube=warn`).
pub fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_string())
        .map_err(|e| format!("not a log filter such as info or allot=debug,kube=warn ({e})"))
}

/// Install the global tracing subscriber: `level` is an `EnvFilter` directive (`info`,
/// `allot=debug,kube=warn`); `RUST_LOG` wins when set. Safe to call twice (the second is ignored).
pub fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(level)).unwrap_or_else(|e| {
        eprintln!("warning: bad log level {level:?} ({e}); using info");
        EnvFilter::new("info")
    });
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").is_some()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(super::use_colour(true, false));
        assert!(!super::use_colour(false, false), "a file or a pipe gets plain text");
        assert!(!super::use_colour(true, true), "NO_COLOR wins");
    }
}
