//! Value parsers for numeric flags and environment variables: a value outside its bounds (NaN,
//! infinite, negative, zero where it means nothing, absurdly large) is refused by clap at
//! start-up, with the flag, the value and the bounds, and exit code 2. Each flag's help states
//! the same bounds.

use std::ops::RangeInclusive;

/// A finite number in `lo..=hi`, or above `lo` when `lo_open`.
#[derive(Clone, Copy, Debug)]
pub struct Number {
    lo: f64,
    lo_open: bool,
    hi: f64,
}

impl Number {
    /// `(lo, hi]`.
    pub const fn above(lo: f64, hi: f64) -> Self {
        Self { lo, lo_open: true, hi }
    }

    /// `[lo, hi]`.
    pub const fn within(lo: f64, hi: f64) -> Self {
        Self { lo, lo_open: false, hi }
    }

    /// Check a value given programmatically (not through clap).
    pub fn check(&self, flag: &str, v: f64) -> Result<f64, String> {
        let ok = v.is_finite() && (if self.lo_open { v > self.lo } else { v >= self.lo }) && v <= self.hi;
        if ok { Ok(v) } else { Err(format!("{flag}: {}, got {v}", self.describe())) }
    }

    fn describe(&self) -> String {
        let bound = if self.lo_open { ">" } else { "≥" };
        format!("must be a number {bound} {} and ≤ {}", self.lo, self.hi)
    }
}

impl clap::builder::TypedValueParser for Number {
    type Value = f64;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<f64, clap::Error> {
        let text = value.to_str().unwrap_or_default();
        let parsed: f64 = text.trim().parse().unwrap_or(f64::NAN);
        if parsed.is_finite() && self.check("", parsed).is_ok() {
            return Ok(parsed);
        }
        Err(invalid(cmd, arg, text, &self.describe()))
    }
}

/// A whole number in a range.
#[derive(Clone, Debug)]
pub struct Count(pub RangeInclusive<u64>);

impl Count {
    fn describe(&self) -> String {
        format!("must be a whole number between {} and {}", self.0.start(), self.0.end())
    }
}

impl clap::builder::TypedValueParser for Count {
    type Value = u64;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<u64, clap::Error> {
        let text = value.to_str().unwrap_or_default();
        match text.trim().parse::<u64>() {
            Ok(n) if self.0.contains(&n) => Ok(n),
            _ => Err(invalid(cmd, arg, text, &self.describe())),
        }
    }
}

/// clap's "invalid value" error, naming the flag (or its environment variable) and the bounds.
fn invalid(cmd: &clap::Command, arg: Option<&clap::Arg>, value: &str, why: &str) -> clap::Error {
    let flag = arg.map_or_else(
        || "value".to_string(),
        |a| a.get_long().map_or_else(|| a.get_id().to_string(), |l| format!("--{l}")),
    );
    let env = arg.and_then(|a| a.get_env()).map(|e| format!(" (or {})", e.to_string_lossy())).unwrap_or_default();
    let shown = crate::scenario::for_terminal(value);
    cmd.clone()
        .error(clap::error::ErrorKind::ValueValidation, format!("invalid value {shown:?} for {flag}{env}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[arg(long, allow_negative_numbers = true, env = "BOUNDS_TEST_SECONDS", value_parser = Number::above(0.0, 3600.0), default_value_t = 30.0)]
        seconds: f64,
        #[arg(long, allow_negative_numbers = true, value_parser = Count(1..=10), default_value_t = 2)]
        slots: u64,
    }

    #[test]
    fn numbers_outside_their_bounds_are_refused_with_the_flag_and_bounds() {
        for bad in ["nan", "inf", "-5", "0", "1e20", "fast", ""] {
            let e = Cli::try_parse_from(["t", "--seconds", bad]).expect_err(bad);
            let text = e.to_string();
            assert!(text.contains("--seconds") && text.contains("> 0 and ≤ 3600"), "{bad}: {text}");
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        for bad in ["0", "11", "-1", "2.5"] {
            let e = Cli::try_parse_from(["t", "--slots", bad]).expect_err(bad);
            assert!(e.to_string().contains("between 1 and 10"), "{e}");
        }
        let ok = Cli::try_parse_from(["t", "--seconds", "3600", "--slots", "10"]).expect("bounds are inclusive");
        assert_eq!((ok.seconds, ok.slots), (3600.0, 10));
    }

    #[test]
    fn programmatic_values_are_checked_the_same_way() {
        let b = Number::within(0.0, 10.0);
        assert!(b.check("--x", 0.0).is_ok());
        assert_eq!(b.check("--x", -1.0).expect_err("negative"), "--x: must be a number ≥ 0 and ≤ 10, got -1");
        assert!(b.check("--x", f64::NAN).is_err());
    }
}
