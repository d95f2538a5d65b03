//! Running one MILP through HiGHS: options, the process-wide solver lock, and the statistics
//! good_lp does not expose (status in HiGHS's words, MIP gap, objective).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use good_lp::solvers::highs::highs;
use good_lp::{SolverModel, Variable};
use highs::HighsModelStatus;

use super::milp::{Handles, Milp};

/// HiGHS 1.15's C API resets a global scheduler when a model is destroyed, which races with a
/// solve on another thread (reference/rust-stack.md §3); all solves go through this lock.
static SOLVER_LOCK: Mutex<()> = Mutex::new(());

/// Where HiGHS's log lines go when it is on (the CLI passes one that writes to stderr, so the
/// log never mixes with a plan printed on stdout).
pub type LogSink = fn(&str);

/// Options of one solve.
#[derive(Clone, Debug)]
pub struct SolveOptions {
    /// Wall-clock limit: a last resort (it makes the result depend on machine load); the limits
    /// that decide plans are `node_limit` and the phase structure.
    pub time_limit_s: f64,
    pub mip_gap: f64,
    /// Branch-and-bound nodes HiGHS may explore (deterministic, unlike the time limit).
    pub node_limit: Option<u32>,
    /// HiGHS's own log, line by line (diagnostics).
    pub log: Option<LogSink>,
    /// Extra HiGHS options (diagnostics).
    pub extra: Vec<(String, HighsValue)>,
}

/// Extra HiGHS options for experiments, `name=value` pairs separated by commas (the CLI reads
/// them from `ALLOT_HIGHS_OPTIONS`); values are typed as bool, integer, float or string.
pub fn parse_highs_options(text: &str) -> Vec<(String, HighsValue)> {
    text.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let value = if let Ok(b) = v.parse::<bool>() {
                HighsValue::Bool(b)
            } else if let Ok(i) = v.parse::<i32>() {
                HighsValue::Int(i)
            } else if let Ok(f) = v.parse::<f64>() {
                HighsValue::Float(f)
            } else {
                HighsValue::Text(v.to_string())
            };
            (k.trim().to_string(), value)
        })
        .collect()
}

/// Check `ALLOT_HIGHS_OPTIONS` at start-up: every entry `name=value` with a plain option name.
pub fn check_highs_options(text: &str) -> Result<String, String> {
    for entry in text.split(',').filter(|e| !e.trim().is_empty()) {
        let Some((name, value)) = entry.split_once('=') else {
            return Err(format!("{entry:?} is not name=value"));
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || value.trim().is_empty() {
            return Err(format!("{entry:?} is not name=value with a HiGHS option name"));
        }
    }
    Ok(text.to_string())
}

/// A typed HiGHS option value.
#[derive(Clone, Debug, PartialEq)]
pub enum HighsValue {
    Bool(bool),
    Int(i32),
    Float(f64),
    Text(String),
}

/// A solved phase: values of every column plus what HiGHS reports.
#[derive(Clone, Debug)]
pub struct Solved {
    values: HashMap<Variable, f64>,
    /// Every column's value in HiGHS order (a start for the next phase).
    pub columns: Vec<f64>,
    pub status: HighsModelStatus,
    pub mip_gap: f64,
    pub objective: f64,
    pub solve_ms: f64,
    /// Branch-and-bound nodes explored (0 for an LP).
    pub nodes: i64,
    /// HiGHS's proven lower bound on a minimized objective (upper bound when maximizing);
    /// None where HiGHS reports none (an LP, or no finite bound).
    pub dual_bound: Option<f64>,
}

impl Solved {
    pub fn value(&self, var: Variable) -> f64 {
        self.values.get(&var).copied().expect("variable belongs to this model")
    }

    pub fn hit_time_limit(&self) -> bool {
        self.status == HighsModelStatus::ReachedTimeLimit
    }

    /// Stopped by the node limit (HiGHS reports it as its solution limit).
    pub fn hit_node_limit(&self) -> bool {
        self.status == HighsModelStatus::ReachedSolutionLimit
    }
}

/// Forwards HiGHS's log lines to the sink passed as user data.
extern "C" fn forward_log(
    _callback_type: std::os::raw::c_int,
    message: *const std::os::raw::c_char,
    _data_out: *const highs_sys::HighsCallbackDataOut,
    _data_in: *mut highs_sys::HighsCallbackDataIn,
    user_data: *mut std::os::raw::c_void,
) {
    if message.is_null() || user_data.is_null() {
        return;
    }
    // SAFETY: HiGHS passes a NUL-terminated message valid for this call, and `user_data` is the
    // `LogSink` that `solve` boxed and keeps alive until the solve returns.
    let (text, sink) = unsafe { (std::ffi::CStr::from_ptr(message), *(user_data as *const LogSink)) };
    sink(text.to_string_lossy().trim_end_matches('\n'));
}

/// Why a phase produced no solution.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SolveError {
    #[error("infeasible")]
    Infeasible,
    #[error("no feasible solution found within the solve's node or time limit")]
    NoIncumbent,
    #[error("HiGHS failed: {0}")]
    Solver(String),
}

/// Solve one phase, optionally starting from a feasible point (one value per column). The
/// variables' handles come back with the values.
pub fn solve(milp: Milp, options: SolveOptions, start: Option<&[f64]>) -> Result<(Solved, Handles), SolveError> {
    let Milp { vars, constraints, objective, maximize, handles } = milp;
    let unsolved = if maximize { vars.maximise(objective.clone()) } else { vars.minimise(objective.clone()) };
    let mut problem = unsolved.using(highs);
    for c in constraints {
        problem.add_constraint(c);
    }
    let mut model = problem.try_into_inner().map_err(|e| SolveError::Solver(e.to_string()))?;
    model.make_quiet();
    // Boxed so its address stays valid while HiGHS may call back (until this function returns).
    let sink: Option<Box<LogSink>> = options.log.map(Box::new);
    if let Some(sink) = &sink {
        // The log goes through a callback, never to the console: stdout carries the plan.
        model.set_option("output_flag", true);
        model.set_option("log_to_console", false);
        let data = std::ptr::from_ref::<LogSink>(sink.as_ref()).cast_mut().cast::<std::os::raw::c_void>();
        // SAFETY: the pointer is a live Highs instance owned by `model`; `data` outlives the solve.
        unsafe {
            highs_sys::Highs_setCallback(model.as_mut_ptr(), Some(forward_log), data);
            highs_sys::Highs_startCallback(model.as_mut_ptr(), LOGGING_CALLBACK);
        }
    }
    model.set_option("time_limit", options.time_limit_s);
    if let Some(nodes) = options.node_limit {
        model.set_option("mip_max_nodes", i32::try_from(nodes).unwrap_or(i32::MAX));
    }
    model.set_option("mip_rel_gap", options.mip_gap);
    // A fixed seed keeps solves reproducible (DESIGN §2: same snapshot, same plan).
    model.set_option("random_seed", 0);
    // Feasibility jump costs ~25 ms per solve whatever the model's size (measured with the
    // HiGHS log on the benchmark fleets) and never found the incumbent there; branching finds
    // them within the first nodes. Off, so many small solves stay cheap.
    model.set_option("mip_heuristic_run_feasibility_jump", false);
    for (name, value) in &options.extra {
        let _ = match value {
            HighsValue::Bool(b) => model.try_set_option(name.as_str(), *b),
            HighsValue::Int(i) => model.try_set_option(name.as_str(), *i),
            HighsValue::Float(f) => model.try_set_option(name.as_str(), *f),
            HighsValue::Text(t) => model.try_set_option(name.as_str(), t.as_str()),
        };
    }
    if let Some(start) = start.filter(|s| s.len() == handles.columns.len()) {
        // HiGHS checks the point and ignores it when infeasible, so a bad start costs nothing.
        // With a start, HiGHS 1.15's presolve has pruned better solutions: on a brute-force
        // test instance it declared a feasible start optimal right after presolve, while the
        // same model without the start (or without presolve) found a plan serving twice as
        // much. Presolve stays on for phases without a start.
        model.set_option("presolve", "off");
        let _ = model.try_set_solution(Some(start), None, None, None);
    }

    let _guard = SOLVER_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    let solved = model.try_solve().map_err(|e| SolveError::Solver(format!("{e:?}")))?;
    let solve_ms = started.elapsed().as_secs_f64() * 1e3;
    let status = solved.status();
    match status {
        HighsModelStatus::Infeasible | HighsModelStatus::UnboundedOrInfeasible => return Err(SolveError::Infeasible),
        HighsModelStatus::Optimal
        | HighsModelStatus::ReachedTimeLimit
        | HighsModelStatus::ReachedIterationLimit
        | HighsModelStatus::ReachedSolutionLimit
        | HighsModelStatus::ReachedInterrupt
        | HighsModelStatus::ObjectiveBound
        | HighsModelStatus::ObjectiveTarget => {}
        other => return Err(SolveError::Solver(format!("{other:?}"))),
    }
    if solved.primal_solution_status() != highs::HighsSolutionStatus::Feasible {
        return Err(SolveError::NoIncumbent);
    }
    // Columns are created in order, so a variable's position is its HiGHS column.
    let columns = solved.get_solution().columns().to_vec();
    let values = handles.columns.iter().copied().zip(columns.iter().copied()).collect();
    let mip_gap = solved.mip_gap();
    let nodes = node_count(&solved);
    let dual_bound = dual_bound(&solved);
    drop(sink);
    let solved = Solved {
        values,
        columns,
        status,
        mip_gap: if mip_gap.is_finite() { mip_gap.max(0.0) } else { 0.0 },
        objective: solved.objective_value(),
        solve_ms,
        nodes,
        dual_bound,
    };
    Ok((solved, handles))
}

/// HiGHS's `kHighsCallbackLogging` (a `static const` in its C header, which bindgen skips).
const LOGGING_CALLBACK: i32 = 0;

/// Branch-and-bound nodes of a solved MILP (an int64 info item the highs crate cannot read).
fn node_count(solved: &highs::SolvedModel) -> i64 {
    let mut nodes: i64 = 0;
    // SAFETY: a live Highs instance and a NUL-terminated name; HiGHS writes one int64.
    let status = unsafe { highs_sys::Highs_getInt64InfoValue(solved.as_ptr(), c"mip_node_count".as_ptr(), &mut nodes) };
    if status == 0 { nodes.max(0) } else { 0 }
}

/// The MIP dual bound (a double info item the highs crate does not expose).
fn dual_bound(solved: &highs::SolvedModel) -> Option<f64> {
    let mut bound: f64 = f64::NAN;
    // SAFETY: a live Highs instance and a NUL-terminated name; HiGHS writes one double.
    let status =
        unsafe { highs_sys::Highs_getDoubleInfoValue(solved.as_ptr(), c"mip_dual_bound".as_ptr(), &mut bound) };
    (status == 0 && bound.is_finite()).then_some(bound)
}
