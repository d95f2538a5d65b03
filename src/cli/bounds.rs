//! Value parsers for flags and environment variables: a number outside its bounds (NaN,
//! infinite, negative, zero where it means nothing, absurdly large), a Kubernetes name the API
//! server would refuse, or a URL that is not one is refused by clap at start-up, with the flag,
//! the value and the rule, and exit code 2. Each flag's help states the same bounds.

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

/// A Kubernetes name as the API server checks it (RFC 1123): lowercase letters, digits and `-`,
/// starting and ending with a letter or digit; a namespace is one such label of at most 63
/// characters, an object name (ConfigMap, Lease) may also contain `.` and has at most 253.
#[derive(Clone, Copy, Debug)]
pub enum KubeName {
    Namespace,
    Object,
}

impl KubeName {
    pub fn check(self, text: &str) -> Result<(), String> {
        let (max, parts): (usize, Vec<&str>) = match self {
            Self::Namespace => (63, vec![text]),
            Self::Object => (253, text.split('.').collect()),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if text.len() <= max && parts.into_iter().all(label_ok) { Ok(()) } else { Err(self.describe()) }
    }

    fn describe(self) -> String {
        match self {
            Self::Namespace => "must be a namespace: at most 63 lowercase letters, digits and '-', \
                                starting and ending with a letter or digit"
                .into(),
            Self::Object => "must be a Kubernetes object name: at most 253 lowercase letters, digits, '-' \
                             and '.', each dot-separated part starting and ending with a letter or digit"
                .into(),
        }
    }
}

impl clap::builder::TypedValueParser for KubeName {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        match value.to_str() {
            Some(text) if self.check(text).is_ok() => Ok(text.to_string()),
            _ => Err(invalid(cmd, arg, &value.to_string_lossy(), &self.describe())),
        }
    }
}

/// An `http://` or `https://` URL with a host.
pub fn http_url(text: &str) -> Result<String, String> {
    let why = || "must be an http:// or https:// URL with a host, such as https://prometheus:9090".to_string();
    let url = reqwest::Url::parse(text.trim()).map_err(|_| why())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(why());
    }
    Ok(text.trim().to_string())
}

/// Free text shown to other systems (an identity in a Lease and in Events): at most `max`
/// characters, none of them a control character.
#[derive(Clone, Copy, Debug)]
pub struct Text {
    pub max_chars: usize,
}

impl clap::builder::TypedValueParser for Text {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let why = format!("must be text of at most {} characters without control characters", self.max_chars);
        match value.to_str() {
            Some(t) if t.chars().count() <= self.max_chars && !t.chars().any(char::is_control) => Ok(t.to_string()),
            _ => Err(invalid(cmd, arg, &value.to_string_lossy(), &why)),
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
    fn kubernetes_names_are_checked_as_the_api_server_checks_them() {
        for good in ["default", "llm-d", "a", "ns0", &"n".repeat(63)] {
            assert!(KubeName::Namespace.check(good).is_ok(), "{good}");
            assert!(KubeName::Object.check(good).is_ok(), "{good}");
        }
        assert!(KubeName::Object.check("allot.leader-0").is_ok());
        for bad in ["", "Prod", "-a", "a-", "a_b", "a b", "a.b", "ns\n", &"n".repeat(64)] {
            assert!(KubeName::Namespace.check(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "a..b", ".a", "a.", "A.b", "x/y", &"n".repeat(254)] {
            assert!(KubeName::Object.check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        assert_eq!(http_url("https://prometheus:9090").as_deref(), Ok("https://prometheus:9090"));
        assert!(http_url("http://10.0.0.1:9090/prom/").is_ok());
        for bad in ["", "prometheus:9090", "ftp://x", "http://", "https://:9090", "not a url"] {
            assert!(http_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn programmatic_values_are_checked_the_same_way() {
        let b = Number::within(0.0, 10.0);
        assert!(b.check("--x", 0.0).is_ok());
        assert_eq!(b.check("--x", -1.0).expect_err("negative"), "--x: must be a number ≥ 0 and ≤ 10, got -1");
        assert!(b.check("--x", f64::NAN).is_err());
    }
}
