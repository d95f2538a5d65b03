//! Request traces: the Azure LLM inference CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`) and a
//! JSONL format, parsed from text (the CLI reads the file), then scaled, cut and mapped onto the
//! scenario's models and classes.

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    /// Seconds (any origin).
    timestamp: f64,
    input_tokens: u32,
    output_tokens: u32,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    class: Option<String>,
}

/// Parse JSONL: one object per line, `{"timestamp": s, "input_tokens": n, "output_tokens": n}`,
/// optionally with `model` and `class`. Rows may be in any order; they are sorted (stably).
pub fn parse_jsonl(text: &str) -> Result<Vec<TraceRequest>, TraceError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let row: JsonRow = serde_json::from_str(raw).map_err(|e| row_error(line, e.to_string()))?;
        if !row.timestamp.is_finite() {
            return Err(row_error(line, "timestamp: expected a finite number of seconds"));
        }
        if row.input_tokens == 0 || row.output_tokens == 0 {
            return Err(row_error(line, "input_tokens and output_tokens must be ≥ 1"));
        }
        let target = match (row.model, row.class) {
            (Some(m), Some(c)) => Some((m, c)),
            (None, None) => None,
            _ => return Err(row_error(line, "give both model and class, or neither")),
        };
        out.push(TraceRequest {
            arrival_s: row.timestamp,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            target,
        });
    }
    if out.is_empty() {
        return Err(TraceError::Empty);
    }
    out.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    let t0 = out[0].arrival_s;
    for r in &mut out {
        r.arrival_s -= t0;
    }
    Ok(out)
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
