//! Request traces as their publishers ship them, parsed from text (the CLI reads the file), then
//! checked for plausibility, jittered, scaled, cut and mapped onto the scenario's models and
//! classes. Formats (`docs/evaluation.md`):
//!
//! - the Azure LLM inference CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`, wall-clock times);
//! - the BurstGPT CSV (`Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`,
//!   seconds; rows with 0 response tokens are the trace's failed requests and are skipped);
//! - JSONL: Mooncake's (`timestamp` in ms, `input_length`, `output_length`, `hash_ids`) and
//!   Allot's own (`timestamp`, `timestamp_s` or `timestamp_ms`, `input_tokens`, `output_tokens`,
//!   optional `model` and `class`).

use serde::Deserialize;

use crate::scenario::Snapshot;

/// One request of a trace, before it is assigned to a model.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRequest {
    /// Arrival time, seconds from the trace's first request.
    pub arrival_s: f64,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// `model/class` named by the trace itself (JSONL only); wins over rules and shares.
    pub target: Option<(String, String)>,
}

/// A request as the simulator replays it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    pub arrival_s: f64,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Index into `Snapshot::models`.
    pub model: usize,
    /// Index into that model's `demands` (its class).
    pub demand: usize,
}

/// Why a trace could not be read or mapped.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    #[error("line {line}: {message}")]
    Row { line: usize, message: String },
    #[error("the trace has no requests")]
    Empty,
    #[error("{0}")]
    Mapping(String),
}

fn row_error(line: usize, message: impl Into<String>) -> TraceError {
    TraceError::Row { line, message: message.into() }
}

/// Parse the Azure LLM inference trace CSV. Timestamps (`YYYY-MM-DD HH:MM:SS.fffffff`) become
/// seconds since the first row; rows must be in time order.
pub fn parse_azure_csv(text: &str) -> Result<Vec<TraceRequest>, TraceError> {
    let mut out = Vec::new();
    let mut first_s: Option<f64> = None;
    let mut last_s = f64::NEG_INFINITY;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let row = raw.trim();
        if row.is_empty() || (i == 0 && row.starts_with("TIMESTAMP")) {
            continue;
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if fields.len() != 3 {
            return Err(row_error(
                line,
                format!("expected 3 fields (TIMESTAMP,ContextTokens,GeneratedTokens), got {}", fields.len()),
            ));
        }
        let t = parse_timestamp(fields[0]).ok_or_else(|| {
            row_error(line, format!("TIMESTAMP: expected YYYY-MM-DD HH:MM:SS[.fff], got {:?}", fields[0]))
        })?;
        let input = parse_tokens(line, "ContextTokens", fields[1])?;
        let output = parse_tokens(line, "GeneratedTokens", fields[2])?;
        if t < last_s {
            return Err(row_error(line, "TIMESTAMP goes back in time; the trace must be sorted"));
        }
        last_s = t;
        let t0 = *first_s.get_or_insert(t);
        out.push(TraceRequest { arrival_s: t - t0, input_tokens: input, output_tokens: output, target: None });
    }
    if out.is_empty() {
        return Err(TraceError::Empty);
    }
    Ok(out)
}

fn parse_tokens(line: usize, field: &str, text: &str) -> Result<u32, TraceError> {
    match text.parse::<u32>() {
        Ok(0) | Err(_) => Err(row_error(line, format!("{field}: expected a positive integer, got {text:?}"))),
        Ok(n) => Ok(n),
    }
}

/// Seconds since 1970 (proleptic Gregorian, no time zone) of `YYYY-MM-DD HH:MM:SS[.frac]`.
fn parse_timestamp(text: &str) -> Option<f64> {
    let (date, time) = text.split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut t = time.split(':');
    let (h, min, sec) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?, t.next()?);
    if t.next().is_some() || !(0..24).contains(&h) || !(0..60).contains(&min) {
        return None;
    }
    let sec: f64 = sec.parse().ok().filter(|s: &f64| (0.0..61.0).contains(s))?;
    Some((days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60) as f64 + sec)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A trace file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceFormat {
    /// Azure LLM inference trace CSV.
    Azure,
    /// BurstGPT CSV.
    BurstGpt,
    /// One JSON object per line: Allot's fields or Mooncake's.
    Jsonl,
}

impl TraceFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceFormat::Azure => "Azure CSV",
            TraceFormat::BurstGpt => "BurstGPT CSV",
            TraceFormat::Jsonl => "JSONL",
        }
    }
}

/// The unit of a JSONL trace's `timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Milliseconds,
}

impl TimeUnit {
    fn seconds(self) -> f64 {
        match self {
            TimeUnit::Seconds => 1.0,
            TimeUnit::Milliseconds => 1e-3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::Seconds => "s",
            TimeUnit::Milliseconds => "ms",
        }
    }
}

/// A parsed trace and what reading it assumed or left out.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Sorted by arrival, the first at 0.
    pub requests: Vec<TraceRequest>,
    pub format: TraceFormat,
    /// What was assumed (the time unit and why) or skipped, one sentence each.
    pub notes: Vec<String>,
}

/// Detect the format from the content: a JSON object on the first line is JSONL; a CSV header
/// names its columns.
pub fn detect_format(text: &str) -> Result<TraceFormat, TraceError> {
    let Some((line, first)) = text.lines().enumerate().find(|(_, l)| !l.trim().is_empty()) else {
        return Err(TraceError::Empty);
    };
    let first = first.trim().trim_start_matches('\u{feff}');
    if first.starts_with('{') {
        return Ok(TraceFormat::Jsonl);
    }
    let header: Vec<String> = first.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
    if header.iter().any(|c| c == "request tokens") && header.iter().any(|c| c == "response tokens") {
        return Ok(TraceFormat::BurstGpt);
    }
    if header.first().is_some_and(|c| c == "timestamp") && header.iter().any(|c| c == "contexttokens") {
        return Ok(TraceFormat::Azure);
    }
    // Headerless Azure rows (a date first) are what the Azure parser has always accepted.
    if parse_timestamp(first.split(',').next().unwrap_or("").trim()).is_some() {
        return Ok(TraceFormat::Azure);
    }
    Err(row_error(
        line + 1,
        "unknown trace format: expected JSONL, an Azure CSV header (TIMESTAMP,ContextTokens,GeneratedTokens) \
         or a BurstGPT CSV header (Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type)",
    ))
}

/// Parse a trace of the given format (detected from the content when `None`); `time_unit` is
/// the unit of JSONL's `timestamp` (see [`parse_jsonl_with`]) and must not be given otherwise.
pub fn parse(text: &str, format: Option<TraceFormat>, time_unit: Option<TimeUnit>) -> Result<Trace, TraceError> {
    let format = match format {
        Some(f) => f,
        None => detect_format(text)?,
    };
    if time_unit.is_some() && format != TraceFormat::Jsonl {
        return Err(TraceError::Mapping(format!(
            "a time unit applies to JSONL traces only; {} says its own",
            format.as_str()
        )));
    }
    let (requests, notes) = match format {
        TraceFormat::Azure => (parse_azure_csv(text)?, Vec::new()),
        TraceFormat::BurstGpt => parse_burstgpt_csv(text)?,
        TraceFormat::Jsonl => parse_jsonl_with(text, time_unit)?,
    };
    Ok(Trace { requests, format, notes })
}

/// Parse the BurstGPT CSV: `Timestamp` is seconds from the first day's midnight; columns are
/// found by name (later releases add `Session ID` and `Elapsed time`). Rows with 0 response (or
/// request) tokens are the trace's failed requests: skipped and counted in the notes.
pub fn parse_burstgpt_csv(text: &str) -> Result<(Vec<TraceRequest>, Vec<String>), TraceError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| row_error(1, format!("header: {e}")))?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name))
            .ok_or_else(|| row_error(1, format!("no {name:?} column (BurstGPT header: Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type)")))
    };
    let (t_col, in_col, out_col) = (column("Timestamp")?, column("Request tokens")?, column("Response tokens")?);
    let mut out = Vec::new();
    let mut failed = 0usize;
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| row_error(line, e.to_string()))?;
        let field = |c: usize| record.get(c).unwrap_or("");
        let t: f64 = field(t_col)
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite() && *t >= 0.0)
            .ok_or_else(|| row_error(line, format!("Timestamp: expected seconds ≥ 0, got {:?}", field(t_col))))?;
        let count = |c: usize, name: &str| {
            field(c)
                .parse::<u32>()
                .map_err(|_| row_error(line, format!("{name}: expected a whole number, got {:?}", field(c))))
        };
        let (input, output) = (count(in_col, "Request tokens")?, count(out_col, "Response tokens")?);
        if input == 0 || output == 0 {
            failed += 1;
            continue;
        }
        out.push(TraceRequest { arrival_s: t, input_tokens: input, output_tokens: output, target: None });
    }
    if out.is_empty() {
        return Err(TraceError::Empty);
    }
    let mut notes = vec!["BurstGPT: Timestamp in seconds (as the publisher documents)".to_string()];
    if failed > 0 {
        notes.push(format!("{failed} rows with 0 request or response tokens (failed requests) skipped"));
    }
    Ok((rebase(out), notes))
}

/// Sort stably by arrival and start the trace at 0.
fn rebase(mut out: Vec<TraceRequest>) -> Vec<TraceRequest> {
    out.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    let t0 = out.first().map_or(0.0, |r| r.arrival_s);
    for r in &mut out {
        r.arrival_s -= t0;
    }
    out
}

/// One JSONL row: Allot's names or Mooncake's, one of each pair.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(default)]
    timestamp_s: Option<f64>,
    #[serde(default)]
    timestamp_ms: Option<f64>,
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
    /// Mooncake.
    #[serde(default)]
    input_length: Option<u32>,
    /// Mooncake.
    #[serde(default)]
    output_length: Option<u32>,
    /// Mooncake's prefix-cache block hashes: read, not simulated (the engine has no prefix cache).
    #[serde(default)]
    #[allow(dead_code)]
    hash_ids: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    class: Option<String>,
}

/// Parse JSONL with `timestamp` in seconds unless Mooncake-shaped; see [`parse_jsonl_with`].
pub fn parse_jsonl(text: &str) -> Result<Vec<TraceRequest>, TraceError> {
    parse_jsonl_with(text, None).map(|(requests, _)| requests)
}

/// Parse JSONL: one object per line with a time (`timestamp_s`, `timestamp_ms`, or `timestamp`
/// in `time_unit`), prompt and output tokens (`input_tokens`/`output_tokens`, or Mooncake's
/// `input_length`/`output_length`), optionally `model` and `class`. Without `time_unit`,
/// `timestamp` is in ms in Mooncake-shaped rows (as Mooncake documents it) and in seconds
/// otherwise. Rows may be in any order; they are sorted (stably). Returns notes on what was assumed.
pub fn parse_jsonl_with(
    text: &str,
    time_unit: Option<TimeUnit>,
) -> Result<(Vec<TraceRequest>, Vec<String>), TraceError> {
    let mut out = Vec::new();
    let (mut mooncake, mut allot, mut assumed) = (0usize, 0usize, None::<TimeUnit>);
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let row: JsonRow =
            serde_json::from_str(raw.trim_start_matches('\u{feff}')).map_err(|e| row_error(line, e.to_string()))?;
        let tokens = |a: Option<u32>, b: Option<u32>, names: &str| match (a, b) {
            (Some(n), None) | (None, Some(n)) => Ok(n),
            (Some(_), Some(_)) => Err(row_error(line, format!("give one of {names}, not both"))),
            (None, None) => Err(row_error(line, format!("missing {names}"))),
        };
        let input = tokens(row.input_tokens, row.input_length, "input_tokens or input_length")?;
        let output = tokens(row.output_tokens, row.output_length, "output_tokens or output_length")?;
        let is_mooncake = row.input_length.is_some() || row.output_length.is_some();
        if is_mooncake {
            mooncake += 1
        } else {
            allot += 1
        }
        let arrival_s = match (row.timestamp, row.timestamp_s, row.timestamp_ms) {
            (None, Some(s), None) => s,
            (None, None, Some(ms)) => ms * 1e-3,
            (Some(t), None, None) => {
                let unit = time_unit.unwrap_or(if is_mooncake { TimeUnit::Milliseconds } else { TimeUnit::Seconds });
                assumed = Some(unit);
                t * unit.seconds()
            }
            (None, None, None) => return Err(row_error(line, "missing timestamp (or timestamp_s, timestamp_ms)")),
            _ => return Err(row_error(line, "give one of timestamp, timestamp_s and timestamp_ms")),
        };
        if !arrival_s.is_finite() {
            return Err(row_error(line, "timestamp: expected a finite number"));
        }
        if input == 0 || output == 0 {
            return Err(row_error(line, "input and output tokens must be ≥ 1"));
        }
        let target = match (row.model, row.class) {
            (Some(m), Some(c)) => Some((m, c)),
            (None, None) => None,
            _ => return Err(row_error(line, "give both model and class, or neither")),
        };
        out.push(TraceRequest { arrival_s, input_tokens: input, output_tokens: output, target });
    }
    if out.is_empty() {
        return Err(TraceError::Empty);
    }
    let mut notes = Vec::new();
    if mooncake > 0 {
        notes.push(format!("Mooncake JSONL ({mooncake} rows): hash_ids (prefix-cache blocks) are not simulated"));
    }
    if let Some(unit) = assumed {
        let why = match (time_unit, mooncake > 0 && allot == 0) {
            (Some(_), _) => "as --time-unit says",
            (None, true) => "Mooncake's unit",
            (None, false) => "the default; --time-unit ms for milliseconds",
        };
        notes.push(format!("timestamp in {} ({why})", unit.as_str()));
    }
    Ok((rebase(out), notes))
}

/// What looks wrong with a trace, one sentence each: a rate near zero or a span of weeks (a time
/// unit mistaken), all requests at one instant, or times binned coarsely (many requests share a
/// timestamp: `--jitter-s` spreads them).
pub fn plausibility(trace: &[TraceRequest]) -> Vec<String> {
    let mut out = Vec::new();
    let (Some(first), Some(last)) = (trace.first(), trace.last()) else { return out };
    let span_s = last.arrival_s - first.arrival_s;
    let n = trace.len();
    if n > 1 && span_s <= 0.0 {
        out.push(format!("all {n} requests arrive at the same instant"));
        return out;
    }
    let rate_rps = n as f64 / span_s.max(1e-9);
    if span_s > 7.0 * 86_400.0 {
        out.push(format!(
            "the trace spans {:.1} days: if its times are milliseconds, say so (--time-unit ms)",
            span_s / 86_400.0
        ));
    }
    if n > 1 && rate_rps < 0.01 {
        out.push(format!("the trace averages {rate_rps:.4} req/s: is its time unit right (--time-unit)?"));
    }
    let shared = trace.windows(2).filter(|w| w[1].arrival_s == w[0].arrival_s).count();
    if n >= 10 && shared * 5 >= n {
        let mut gaps: Vec<f64> =
            trace.windows(2).map(|w| w[1].arrival_s - w[0].arrival_s).filter(|g| *g > 0.0).collect();
        let median = super::quantile(&mut gaps, 0.5);
        out.push(format!(
            "{:.0} % of requests share their timestamp with the previous one: times look binned to about {} s; \
             --jitter-s {} spreads each bin",
            100.0 * shared as f64 / n as f64,
            trim(median),
            trim(median)
        ));
    }
    out
}

/// A bin width as a reader would say it: 0.1 s resolution from 1 s up.
fn trim(x: f64) -> String {
    let s = if x >= 1.0 { format!("{x:.1}") } else { format!("{x:.3}") };
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Spread binned times: each arrival moves later by a seeded uniform draw in `[0, width_s)`, then
/// the trace is sorted again (stably). A width of 0 changes nothing.
pub fn jitter(trace: &[TraceRequest], width_s: f64, seed: u64) -> Vec<TraceRequest> {
    let mut rng = SplitMix64::new(seed ^ 0x6a09_e667_f3bc_c909);
    let mut out: Vec<TraceRequest> =
        trace.iter().map(|r| TraceRequest { arrival_s: r.arrival_s + width_s * rng.next_f64(), ..r.clone() }).collect();
    out.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    out
}

/// Which part of a trace to replay, and how fast.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Skip requests before this time (trace seconds).
    pub start_s: f64,
    /// Keep this many trace seconds after `start_s` (all when `None`).
    pub duration_s: Option<f64>,
    /// Arrival times are divided by this: 3 replays the trace at three times its rate.
    pub rate_scale: f64,
}

impl Default for Window {
    fn default() -> Self {
        Self { start_s: 0.0, duration_s: None, rate_scale: 1.0 }
    }
}

/// Cut the window out of a trace and compress its time by the rate scale; times restart at 0.
pub fn select(trace: &[TraceRequest], window: &Window) -> Vec<TraceRequest> {
    let end_s = window.duration_s.map_or(f64::INFINITY, |d| window.start_s + d);
    trace
        .iter()
        .filter(|r| r.arrival_s >= window.start_s && r.arrival_s < end_s)
        .map(|r| TraceRequest { arrival_s: (r.arrival_s - window.start_s) / window.rate_scale, ..r.clone() })
        .collect()
}

/// A mapping rule: requests whose prompt is at least `min_input_tokens` (and below
/// `max_input_tokens`) go to `model/class`. Written `model/class:MIN-MAX` (either bound may be
/// empty), first match wins.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub model: String,
    pub class: String,
    pub min_input_tokens: u32,
    pub max_input_tokens: u32,
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("rule {s:?}: expected MODEL/CLASS[:MIN-MAX] (input tokens, bounds optional)");
        let (target, range) = match s.split_once(':') {
            Some((t, r)) => (t, Some(r)),
            None => (s, None),
        };
        let (model, class) = target.split_once('/').ok_or_else(err)?;
        let (mut min, mut max) = (0, u32::MAX);
        if let Some(r) = range {
            let (lo, hi) = r.split_once('-').ok_or_else(err)?;
            if !lo.is_empty() {
                min = lo.parse().map_err(|_| err())?;
            }
            if !hi.is_empty() {
                max = hi.parse().map_err(|_| err())?;
            }
        }
        Ok(Rule { model: model.into(), class: class.into(), min_input_tokens: min, max_input_tokens: max })
    }
}

/// splitmix64: a tiny deterministic generator (no dependency, stable across platforms).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Assign each request a (model, class): the trace's own target, else the first matching rule,
/// else a seeded draw weighted by the scenario's `load` rates (equal weights when all are 0).
pub fn assign(
    trace: &[TraceRequest],
    snapshot: &Snapshot,
    rules: &[Rule],
    seed: u64,
) -> Result<Vec<Request>, TraceError> {
    let find = |model: &str, class: &str| -> Result<(usize, usize), TraceError> {
        let m = snapshot
            .models
            .iter()
            .position(|x| x.name == model)
            .ok_or_else(|| TraceError::Mapping(format!("no model {model:?} in the scenario")))?;
        let k = snapshot.models[m].demands.iter().position(|d| snapshot.classes[d.class].name == class).ok_or_else(
            || TraceError::Mapping(format!("model {model:?} has no load entry for class {class:?} in the scenario")),
        )?;
        Ok((m, k))
    };
    let resolved: Vec<((usize, usize), &Rule)> =
        rules.iter().map(|r| find(&r.model, &r.class).map(|t| (t, r))).collect::<Result<_, _>>()?;
    let mut shares: Vec<((usize, usize), f64)> = Vec::new();
    for (m, model) in snapshot.models.iter().enumerate() {
        for (k, d) in model.demands.iter().enumerate() {
            shares.push(((m, k), d.arrival_rps));
        }
    }
    if shares.is_empty() {
        return Err(TraceError::Mapping("the scenario has no load entries to map requests to".into()));
    }
    let total: f64 = shares.iter().map(|s| s.1).sum();
    if total <= 0.0 {
        shares.iter_mut().for_each(|s| s.1 = 1.0);
    }
    let total: f64 = shares.iter().map(|s| s.1).sum();
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(trace.len());
    for r in trace {
        let draw = rng.next_f64() * total;
        let (model, demand) = if let Some((m, c)) = &r.target {
            find(m, c)?
        } else if let Some((t, _)) = resolved
            .iter()
            .find(|(_, rule)| r.input_tokens >= rule.min_input_tokens && r.input_tokens < rule.max_input_tokens)
        {
            *t
        } else {
            let mut acc = 0.0;
            let mut pick = shares[shares.len() - 1].0;
            for &(t, w) in &shares {
                acc += w;
                if draw < acc {
                    pick = t;
                    break;
                }
            }
            pick
        };
        out.push(Request {
            arrival_s: r.arrival_s,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            model,
            demand,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AZURE: &str = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
        2023-11-16 18:15:46.6805900,374,44\n\
        2023-11-16 18:15:50.9951690,396,109\n\
        2023-11-17 00:00:00.0000000,10,1\n";

    #[test]
    fn azure_rows_become_seconds_since_the_first_request() {
        let t = parse_azure_csv(AZURE).expect("valid");
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].arrival_s, 0.0);
        assert!((t[1].arrival_s - 4.314579).abs() < 1e-6, "{}", t[1].arrival_s);
        // Across midnight: 18:15:46.68 → 00:00:00 is 5 h 44 min 13.32 s.
        assert!((t[2].arrival_s - 20_653.319_41).abs() < 1e-4, "{}", t[2].arrival_s);
        assert_eq!((t[1].input_tokens, t[1].output_tokens), (396, 109));
    }

    #[test]
    fn bad_azure_rows_name_their_line() {
        let bad = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:47,x,3\n";
        assert_eq!(
            parse_azure_csv(bad),
            Err(TraceError::Row { line: 3, message: "ContextTokens: expected a positive integer, got \"x\"".into() })
        );
        let unsorted = "2023-11-16 18:15:46,1,1\n2023-11-16 18:15:45,1,1\n";
        assert!(matches!(parse_azure_csv(unsorted), Err(TraceError::Row { line: 2, .. })));
        assert!(matches!(parse_azure_csv("2023-13-16 18:15:46,1,1\n"), Err(TraceError::Row { line: 1, .. })));
        assert!(matches!(parse_azure_csv("2023-11-16 18:15:46,1\n"), Err(TraceError::Row { line: 1, .. })));
        assert_eq!(parse_azure_csv("TIMESTAMP,ContextTokens,GeneratedTokens\n"), Err(TraceError::Empty));
    }

    #[test]
    fn jsonl_is_sorted_and_rebased() {
        let text = "{\"timestamp\": 12.5, \"input_tokens\": 10, \"output_tokens\": 2}\n\n\
                    {\"timestamp\": 10, \"input_tokens\": 5, \"output_tokens\": 1, \"model\": \"m\", \"class\": \"c\"}\n";
        let t = parse_jsonl(text).expect("valid");
        assert_eq!(t[0].arrival_s, 0.0);
        assert_eq!(t[0].target, Some(("m".into(), "c".into())));
        assert_eq!(t[1].arrival_s, 2.5);
        assert!(matches!(parse_jsonl("{\"timestamp\": 1}\n"), Err(TraceError::Row { line: 1, .. })));
        assert!(matches!(
            parse_jsonl("{\"timestamp\": 1, \"input_tokens\": 1, \"output_tokens\": 0}"),
            Err(TraceError::Row { line: 1, .. })
        ));
    }

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");

    fn sample(name: &str) -> String {
        std::fs::read_to_string(format!("{DATA}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn mooncake_jsonl_reads_as_published_with_millisecond_timestamps() {
        let text = sample("mooncake_conversation_first300.jsonl");
        let trace = parse(&text, None, None).expect("Mooncake's own rows");
        assert_eq!(trace.format, TraceFormat::Jsonl);
        assert_eq!(trace.requests.len(), 300);
        // The first 300 rows arrive from 0 to 102 000 ms: 102 s, not 28 hours.
        assert_eq!(trace.requests.last().map(|r| r.arrival_s), Some(102.0));
        assert_eq!((trace.requests[0].input_tokens, trace.requests[0].output_tokens), (6758, 500));
        assert!(trace.notes.iter().any(|n| n.contains("timestamp in ms (Mooncake's unit)")), "{:?}", trace.notes);
        // Mooncake bins arrivals to about 3 s: the plausibility check says so and how to spread them.
        let warnings = plausibility(&trace.requests);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("binned to about 3 s") && warnings[0].contains("--jitter-s 3"), "{warnings:?}");
    }

    #[test]
    fn milliseconds_read_as_seconds_are_called_implausible() {
        // What happened before: Mooncake's ms taken for seconds make a 28-hour trace of 300 requests.
        let text = sample("mooncake_conversation_first300.jsonl");
        let trace = parse(&text, None, Some(TimeUnit::Seconds)).expect("parses");
        assert_eq!(trace.requests.last().map(|r| r.arrival_s), Some(102_000.0));
        let warnings = plausibility(&trace.requests);
        assert!(warnings.iter().any(|w| w.contains("req/s: is its time unit right")), "{warnings:?}");
        // A whole hour of it (3.5 M ms) would span 41 days.
        let weeks: Vec<TraceRequest> = (0..1000)
            .map(|i| TraceRequest { arrival_s: f64::from(i) * 3537.0, input_tokens: 1, output_tokens: 1, target: None })
            .collect();
        assert!(plausibility(&weeks).iter().any(|w| w.contains("spans 40.9 days")), "{:?}", plausibility(&weeks));
        let one_instant = vec![weeks[0].clone(), weeks[0].clone()];
        assert_eq!(plausibility(&one_instant), vec!["all 2 requests arrive at the same instant".to_string()]);
        assert!(plausibility(&sample_azure()).is_empty(), "a real Azure trace is plausible");
    }

    fn sample_azure() -> Vec<TraceRequest> {
        parse(&sample("conv_first_300s.csv"), None, None).expect("Azure sample").requests
    }

    #[test]
    fn allot_jsonl_says_its_unit_in_the_field_name_or_defaults_to_seconds() {
        let trace = parse(&sample("azure_conv_first200.jsonl"), None, None).expect("valid");
        assert_eq!(trace.requests.len(), 200);
        let azure = sample_azure();
        // The same rows as the CSV they were converted from, to the microsecond.
        for (j, a) in trace.requests.iter().zip(&azure) {
            assert!((j.arrival_s - a.arrival_s).abs() < 1e-6, "{} vs {}", j.arrival_s, a.arrival_s);
            assert_eq!((j.input_tokens, j.output_tokens), (a.input_tokens, a.output_tokens));
        }
        let rows = "{\"timestamp\": 1500, \"input_tokens\": 3, \"output_tokens\": 2}\n{\"timestamp\": 500, \"input_tokens\": 1, \"output_tokens\": 1}\n";
        let (seconds, notes) = parse_jsonl_with(rows, None).expect("valid");
        assert_eq!(seconds[1].arrival_s, 1000.0);
        assert!(notes.iter().any(|n| n.contains("timestamp in s (the default")), "{notes:?}");
        let (ms, notes) = parse_jsonl_with(rows, Some(TimeUnit::Milliseconds)).expect("valid");
        assert_eq!(ms[1].arrival_s, 1.0);
        assert!(notes.iter().any(|n| n.contains("as --time-unit says")), "{notes:?}");
        let both = "{\"timestamp\": 1, \"timestamp_ms\": 1, \"input_tokens\": 1, \"output_tokens\": 1}";
        assert!(
            matches!(parse_jsonl(both), Err(TraceError::Row { line: 1, ref message }) if message.contains("one of timestamp"))
        );
        let typo = "{\"timestamp\": 1, \"input_token\": 1, \"output_tokens\": 1}";
        assert!(
            matches!(parse_jsonl(typo), Err(TraceError::Row { line: 1, ref message }) if message.contains("input_token"))
        );
    }

    #[test]
    fn burstgpt_csv_reads_by_column_name_and_skips_failed_requests() {
        let text = sample("burstgpt_synthetic.csv");
        assert_eq!(detect_format(&text), Ok(TraceFormat::BurstGpt));
        let trace = parse(&text, None, None).expect("valid");
        let zero_rows = text.lines().skip(1).filter(|l| l.split(',').nth(3) == Some("0")).count();
        assert!(zero_rows > 0, "the sample has failed requests");
        assert_eq!(trace.requests.len(), 300 - zero_rows);
        assert!(
            trace
                .notes
                .iter()
                .any(|n| n == &format!("{zero_rows} rows with 0 request or response tokens (failed requests) skipped"))
        );
        assert_eq!(trace.requests[0].arrival_s, 0.0);
        // Column order does not matter; later releases add columns.
        let reordered = "Model,Log Type,Response tokens,Request tokens,Timestamp,Session ID\nGPT-4,API log,20,100,7,a\nChatGPT,API log,5,9,3.5,b\n";
        let (rows, _) = parse_burstgpt_csv(reordered).expect("valid");
        assert_eq!(
            rows.iter().map(|r| (r.arrival_s, r.input_tokens, r.output_tokens)).collect::<Vec<_>>(),
            vec![(0.0, 9, 5), (3.5, 100, 20)]
        );
        let bad = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,x,1,1,API log\n";
        assert_eq!(
            parse_burstgpt_csv(bad),
            Err(TraceError::Row { line: 2, message: "Request tokens: expected a whole number, got \"x\"".into() })
        );
        assert!(matches!(parse_burstgpt_csv("Timestamp,Model\n1,a\n"), Err(TraceError::Row { line: 1, .. })));
    }

    #[test]
    fn formats_are_told_apart_by_content() {
        assert_eq!(detect_format(&sample("conv_first_300s.csv")), Ok(TraceFormat::Azure));
        assert_eq!(detect_format(&sample("mooncake_conversation_first300.jsonl")), Ok(TraceFormat::Jsonl));
        assert_eq!(detect_format("2023-11-16 18:15:46.68,374,44\n"), Ok(TraceFormat::Azure));
        assert!(matches!(detect_format("a,b,c\n1,2,3\n"), Err(TraceError::Row { line: 1, .. })));
        assert_eq!(detect_format("\n\n"), Err(TraceError::Empty));
        assert!(matches!(parse(AZURE, None, Some(TimeUnit::Milliseconds)), Err(TraceError::Mapping(_))));
    }

    #[test]
    fn jitter_spreads_each_bin_deterministically_and_keeps_order() {
        let binned: Vec<TraceRequest> = (0..100)
            .map(|i| TraceRequest {
                arrival_s: f64::from(i / 10) * 3.0,
                input_tokens: 1 + i,
                output_tokens: 1,
                target: None,
            })
            .collect();
        let spread = jitter(&binned, 3.0, 7);
        assert_eq!(spread, jitter(&binned, 3.0, 7), "seeded");
        assert!(spread.windows(2).all(|w| w[0].arrival_s <= w[1].arrival_s));
        let mut distinct: Vec<f64> = spread.iter().map(|r| r.arrival_s).collect();
        distinct.dedup();
        assert_eq!(distinct.len(), 100);
        // Each request stays within its own bin.
        for r in &spread {
            let bin = f64::from((r.input_tokens - 1) / 10) * 3.0;
            assert!(r.arrival_s >= bin && r.arrival_s < bin + 3.0, "{r:?}");
        }
        assert!(plausibility(&spread).is_empty(), "{:?}", plausibility(&spread));
        assert_eq!(jitter(&binned, 0.0, 7), binned);
    }

    #[test]
    fn window_cuts_and_compresses_time() {
        let trace: Vec<TraceRequest> = (0..10)
            .map(|i| TraceRequest { arrival_s: f64::from(i), input_tokens: 1, output_tokens: 1, target: None })
            .collect();
        let w = Window { start_s: 2.0, duration_s: Some(4.0), rate_scale: 2.0 };
        let cut = select(&trace, &w);
        let times: Vec<f64> = cut.iter().map(|r| r.arrival_s).collect();
        assert_eq!(times, vec![0.0, 0.5, 1.0, 1.5]);
    }

    #[test]
    fn rules_parse_with_optional_bounds() {
        let r: Rule = "code/premium:2000-".parse().expect("valid");
        assert_eq!((r.min_input_tokens, r.max_input_tokens), (2000, u32::MAX));
        let r: Rule = "chat/standard".parse().expect("valid");
        assert_eq!((r.min_input_tokens, r.max_input_tokens), (0, u32::MAX));
        assert!("nomodel".parse::<Rule>().is_err());
        assert!("a/b:x-3".parse::<Rule>().is_err());
    }

    #[test]
    fn requests_map_by_target_then_rule_then_seeded_share() {
        let snapshot = crate::scenario::load(
            "accelerators: [{ name: G, gpus: 8, cost_usd_per_gpu_hour: 1 }]\n\
             service_classes:\n\
             - { name: gold, priority: 1, targets: [{ model: m, ttft: { ms: 1000 } }, { model: n, ttft: { ms: 1000 } }] }\n\
             - { name: iron, priority: 2, targets: [{ model: m, ttft: { ms: 5000 } }] }\n\
             load:\n\
             - { model: m, class: gold, arrival_rate_rps: 1, input_tokens: 10, output_tokens: 10 }\n\
             - { model: m, class: iron, arrival_rate_rps: 3, input_tokens: 10, output_tokens: 10 }\n\
             - { model: n, class: gold, arrival_rate_rps: 0, input_tokens: 10, output_tokens: 10 }\n\
             profiles: [{ name: p, alpha_ms: 20, beta_ms: 1, gamma_ms: 10, delta_ms: 0.1 }]\n\
             variants:\n\
             - { name: a, model: m, accelerator: G, gpus_per_replica: 1, max_batch: 8, profile: p }\n\
             - { name: b, model: n, accelerator: G, gpus_per_replica: 1, max_batch: 8, profile: p }\n",
        )
        .expect("valid");
        let trace: Vec<TraceRequest> = (0..4000)
            .map(|i| TraceRequest {
                arrival_s: f64::from(i),
                input_tokens: if i % 10 == 0 { 5000 } else { 100 },
                output_tokens: 1,
                target: (i == 1).then(|| ("n".to_string(), "gold".to_string())),
            })
            .collect();
        let rules = vec!["n/gold:4000-".parse::<Rule>().expect("rule")];
        let out = assign(&trace, &snapshot, &rules, 9).expect("mapped");
        assert_eq!((out[1].model, out[1].demand), (1, 0), "the trace's own target wins");
        assert!(out.iter().enumerate().filter(|(i, _)| i % 10 == 0).all(|(_, r)| r.model == 1), "rule");
        // The rest by load shares 1 : 3 (n/gold has rate 0 and gets none).
        let rest: Vec<&Request> = out.iter().enumerate().filter(|(i, _)| i % 10 != 0 && *i != 1).map(|x| x.1).collect();
        let iron = rest.iter().filter(|r| (r.model, r.demand) == (0, 1)).count() as f64 / rest.len() as f64;
        assert!((iron - 0.75).abs() < 0.03, "{iron}");
        assert!(rest.iter().all(|r| r.model == 0));
        assert_eq!(out, assign(&trace, &snapshot, &rules, 9).expect("mapped"), "seeded");
        let bad = vec!["x/gold".parse::<Rule>().expect("rule")];
        assert_eq!(
            assign(&trace, &snapshot, &bad, 9),
            Err(TraceError::Mapping("no model \"x\" in the scenario".into()))
        );
    }
}
