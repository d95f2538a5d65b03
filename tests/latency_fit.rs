//! `allot fit` on real GuideLLM sweeps of vLLM (models/data/guidellm-exp2: Qwen2.5-14B, 16
//! prompt/output mixes): the fit through the planner's prediction path, and how well the fitted
//! profile predicts each mix when that mix is left out (docs/latency-model.md, "Targets").

use std::path::Path;

use allot::analyze::fit::guidellm;
use allot::analyze::fit::measurement::Measurement;
use allot::analyze::fit::report::{FitRequest, fit_report};
use allot::analyze::fit::through_model::{FreeParameters, Stat};
use allot::analyze::engine::EngineSpec;
use allot::cli::fit::{DEFAULT_SLOS, lomo_summary, parse_slo, report_text};

fn sweeps() -> Vec<Measurement> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/data/guidellm-exp2");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the data lives in the repository)", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 16, "16 mixes");
    files
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).expect("readable");
            let mix = p.file_stem().expect("stem").to_string_lossy().into_owned();
            guidellm::parse_csv(&text, &p.display().to_string(), &mix).expect("parses")
        })
        .collect()
}

#[test]
fn guidellm_sweeps_fit_and_predict_left_out_mixes() {
    let measurements = sweeps();
    assert_eq!(measurements.len(), 160);
    let engine = EngineSpec::default().resolve(1024, 1);
    let slos = DEFAULT_SLOS.iter().map(|s| parse_slo(s).expect("valid")).collect();
    let request = FitRequest {
        measurements: measurements.clone(),
        engine,
        free: FreeParameters::default(),
        slos,
        leave_one_mix_out: true,
    };
    let started = std::time::Instant::now();
    let report = fit_report(&request).expect("fits");
    eprintln!("{}", report_text(&report, &measurements, &engine));
    eprintln!("fit + leave-one-out in {:.1} s", started.elapsed().as_secs_f64());
    eprintln!("{}", lomo_summary(&report.leave_one_out));
    assert!(report.mape[&Stat::MeanItl] < 0.15);
}
