//! WVA / llm-inferno optimizer JSON, read and planned the way WVA reads and plans it: the input
//! shapes a WVA user writes (issue 13's 26 probes and a few more), each planned or refused as WVA
//! would, with every ignored or repaired field named in a warning and every error naming the WVA
//! field and the value written there.

use allot::plan::PlanMode;
use allot::scenario::{self, LoadError, Snapshot};
use serde_json::{Value, json};

/// Two accelerators, two models with profiles on both, two classes, two servers with load;
/// limited mode with capacity for both types.
fn base() -> Value {
    json!({"system": {
        "acceleratorData": {"accelerators": [
            {"name": "A100", "type": "NVIDIA-A100-PCIE-80GB", "multiplicity": 1, "memSize": 80, "cost": 40.0},
            {"name": "MI300X", "type": "AMD-MI300X-192GB", "multiplicity": 1, "cost": 65.0}]},
        "modelData": {"models": [
            {"name": "granite-13b", "acc": "A100", "accCount": 1, "maxBatchSize": 32, "atTokens": 256,
             "decodeParms": {"alpha": 20.58, "beta": 0.41}, "prefillParms": {"gamma": 5.2, "delta": 0.1}},
            {"name": "granite-13b", "acc": "MI300X", "accCount": 1, "maxBatchSize": 64, "atTokens": 256,
             "decodeParms": {"alpha": 15.0, "beta": 0.3}, "prefillParms": {"gamma": 4.0, "delta": 0.08}},
            {"name": "llama-8b", "acc": "A100", "accCount": 1, "maxBatchSize": 64, "atTokens": 128,
             "decodeParms": {"alpha": 8.0, "beta": 0.2}, "prefillParms": {"gamma": 3.0, "delta": 0.05}}]},
        "serviceClassData": {"serviceClasses": [
            {"name": "Premium", "priority": 1, "modelTargets": [
                {"model": "granite-13b", "slo-itl": 40, "slo-ttft": 500},
                {"model": "llama-8b", "slo-itl": 30, "slo-ttft": 300}]},
            {"name": "Free", "priority": 10, "modelTargets": [
                {"model": "granite-13b", "slo-itl": 80, "slo-ttft": 2000},
                {"model": "llama-8b", "slo-itl": 60, "slo-ttft": 1500}]}]},
        "serverData": {"servers": [
            {"name": "granite:prod", "class": "Premium", "model": "granite-13b", "keepAccelerator": false,
             "minNumReplicas": 1, "maxBatchSize": 0,
             "currentAlloc": {"accelerator": "A100", "numReplicas": 2, "maxBatch": 256, "cost": 80,
                              "itlAverage": 25, "ttftAverage": 100,
                              "load": {"arrivalRate": 600, "avgInTokens": 128, "avgOutTokens": 256}}},
            {"name": "llama:prod", "class": "Premium", "model": "llama-8b", "keepAccelerator": true,
             "minNumReplicas": 1,
             "currentAlloc": {"accelerator": "A100", "numReplicas": 1,
                              "load": {"arrivalRate": 120, "avgInTokens": 64, "avgOutTokens": 128}}}]},
        "optimizerData": {"optimizer": {"unlimited": false}},
        "capacityData": {"count": [{"type": "NVIDIA-A100-PCIE-80GB", "count": 16}, {"type": "AMD-MI300X-192GB", "count": 8}]}
    }})
}

fn load(doc: &Value) -> Result<Snapshot, LoadError> {
    scenario::load(&doc.to_string())
}

fn planned(doc: &Value) -> Snapshot {
    load(doc).unwrap_or_else(|e| panic!("WVA plans this document, so must Allot: {e}"))
}

fn server(doc: &mut Value, i: usize) -> &mut Value {
    &mut doc["system"]["serverData"]["servers"][i]
}

fn model_names(s: &Snapshot) -> Vec<&str> {
    s.models.iter().map(|m| m.name.as_str()).collect()
}

fn variant<'a>(s: &'a Snapshot, name: &str) -> &'a allot::scenario::snapshot::Variant {
    s.variants.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no variant {name}"))
}

/// A warning containing every one of these words.
fn assert_warned(s: &Snapshot, words: &[&str]) {
    assert!(
        s.warnings.iter().any(|w| words.iter().all(|x| w.contains(x))),
        "expected a warning with {words:?}, got {:#?}",
        s.warnings
    );
}

fn problems(doc: &Value) -> Vec<String> {
    match load(doc) {
        Ok(s) => panic!("should be refused, planned {:?}", model_names(&s)),
        Err(e) => e.problems().iter().map(|p| format!("{}: {}", p.path, p.message)).collect(),
    }
}

#[test]
fn the_reference_document_converts_units_and_plans() {
    let s = planned(&base());
    assert_eq!(model_names(&s), ["granite:prod", "llama:prod"]);
    // req/min → req/s.
    assert!((s.models[0].demands[0].arrival_rps - 10.0).abs() < 1e-12);
    // WVA's batch: maxBatchSize·atTokens/avgOutTokens = 32·256/256.
    let a100 = variant(&s, "granite:prod@A100");
    assert_eq!((a100.current_replicas, a100.min_replicas, a100.max_batch), (2, 0, 32));
    assert_eq!(variant(&s, "granite:prod@MI300X").max_batch, 64);
    // minNumReplicas is the model's, not a variant's.
    assert_eq!(s.models[0].min_replicas, 1);
    // cents per unit → USD per GPU.
    let acc = s.accelerators.iter().find(|a| a.name == "NVIDIA-A100-PCIE-80GB").expect("type");
    assert!((acc.cost_usd_per_gpu_hour - 0.40).abs() < 1e-12);
    assert_eq!(acc.gpus, 16);
    let plan = allot::optimize::plan(&s);
    assert!(plan.models.iter().all(|m| m.served_fraction > 0.99), "{:#?}", plan.models);
}

#[test]
fn keep_accelerator_pins_the_current_one() {
    let s = planned(&base());
    let llama: Vec<&str> = s.variants.iter().filter(|v| v.name.starts_with("llama")).map(|v| v.name.as_str()).collect();
    assert_eq!(llama, ["llama:prod@A100"]);
}

// Probe 1 and 2: an empty or missing class is WVA's default class `Free`.
#[test]
fn an_empty_or_missing_class_is_wvas_free_class() {
    let mut doc = base();
    server(&mut doc, 0)["class"] = json!("");
    server(&mut doc, 1).as_object_mut().expect("object").remove("class");
    let s = planned(&doc);
    assert_eq!(s.classes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["Free"]);
    assert_eq!(s.classes[0].priority, 10);
}

#[test]
fn an_empty_class_without_a_free_class_skips_the_server_naming_it() {
    let mut doc = base();
    server(&mut doc, 0)["class"] = json!("");
    doc["system"]["serviceClassData"]["serviceClasses"].as_array_mut().expect("list").pop();
    let s = planned(&doc);
    assert_eq!(model_names(&s), ["llama:prod"]);
    assert_warned(&s, &["system.serverData.servers[0].class", "\"Free\"", "not planned"]);
}

// Probe 3: no maxBatchSize in modelData: WVA's batch is max(0·atTokens/out, 1) = 1.
#[test]
fn a_profile_without_max_batch_size_plans_wvas_batch_of_one() {
    let mut doc = base();
    doc["system"]["modelData"]["models"][1].as_object_mut().expect("object").remove("maxBatchSize");
    let s = planned(&doc);
    assert_eq!(variant(&s, "granite:prod@MI300X").max_batch, 1);
    assert_warned(&s, &["system.modelData.models[1]", "maxBatchSize 0", "1 request"]);
    // The server's own maxBatchSize wins, as in WVA.
    server(&mut doc, 0)["maxBatchSize"] = json!(48);
    assert_eq!(variant(&planned(&doc), "granite:prod@MI300X").max_batch, 48);
}

// Probe 4: performance data for an accelerator that is not defined is not used.
#[test]
fn a_profile_for_an_undefined_accelerator_is_ignored_with_a_warning() {
    let mut doc = base();
    doc["system"]["modelData"]["models"].as_array_mut().expect("list").push(json!(
        {"name": "granite-13b", "acc": "H100", "accCount": 1, "maxBatchSize": 64, "atTokens": 256,
         "decodeParms": {"alpha": 10.0, "beta": 0.2}, "prefillParms": {"gamma": 2.0, "delta": 0.05}}));
    let s = planned(&doc);
    assert!(s.variants.iter().all(|v| !v.name.ends_with("@H100")));
    assert_warned(&s, &["system.modelData.models[3].acc", "\"H100\"", "not defined"]);
}

// Probe 5: one server's class has no target for its model: that server is skipped.
#[test]
fn a_server_without_a_target_is_skipped_and_the_rest_planned() {
    let mut doc = base();
    server(&mut doc, 0)["model"] = json!("mystery-7b");
    let s = planned(&doc);
    assert_eq!(model_names(&s), ["llama:prod"]);
    assert_warned(&s, &["system.serverData.servers[0].model", "no target for model \"mystery-7b\""]);
}

// Probe 6: a server whose model has no modelData at all.
#[test]
fn a_server_without_performance_data_is_skipped_and_the_rest_planned() {
    let mut doc = base();
    doc["system"]["serviceClassData"]["serviceClasses"][0]["modelTargets"]
        .as_array_mut()
        .expect("list")
        .push(json!({"model": "mystery-7b", "slo-itl": 50}));
    server(&mut doc, 0)["model"] = json!("mystery-7b");
    let s = planned(&doc);
    assert_eq!(model_names(&s), ["llama:prod"]);
    assert_warned(&s, &["system.serverData.servers[0].model", "no usable modelData entry", "mystery-7b"]);
}

// Probe 7: keepAccelerator on an accelerator the model has no profile for.
#[test]
fn keep_accelerator_without_a_profile_there_skips_that_server() {
    let mut doc = base();
    server(&mut doc, 1)["currentAlloc"]["accelerator"] = json!("MI300X");
    let s = planned(&doc);
    assert_eq!(model_names(&s), ["granite:prod"]);
    assert_warned(&s, &["system.serverData.servers[1].currentAlloc.accelerator", "keepAccelerator", "\"MI300X\""]);
}

// Probe 8: two accelerator names of one type at different prices.
#[test]
fn two_prices_for_one_type_are_two_pools_in_unlimited_mode() {
    let mut doc = base();
    doc["system"]["acceleratorData"]["accelerators"]
        .as_array_mut()
        .expect("list")
        .push(json!({"name": "A100-spot", "type": "NVIDIA-A100-PCIE-80GB", "multiplicity": 1, "cost": 12.0}));
    doc["system"]["modelData"]["models"].as_array_mut().expect("list").push(json!(
        {"name": "granite-13b", "acc": "A100-spot", "accCount": 1, "maxBatchSize": 32, "atTokens": 256,
         "decodeParms": {"alpha": 20.58, "beta": 0.41}, "prefillParms": {"gamma": 5.2, "delta": 0.1}}));
    doc["system"]["optimizerData"]["optimizer"]["unlimited"] = json!(true);
    let s = planned(&doc);
    let spot = s.accelerators.iter().find(|a| a.name == "NVIDIA-A100-PCIE-80GB@A100-spot").expect("own pool");
    assert!((spot.cost_usd_per_gpu_hour - 0.12).abs() < 1e-12);
    // The cheaper name wins the traffic, as WVA's per-name cost makes it.
    let plan = allot::optimize::plan(&s);
    let on_spot = plan.variants.iter().find(|v| v.name == "granite:prod@A100-spot").expect("variant");
    assert!(on_spot.replicas > 0, "{:#?}", plan.variants);

    // In limited mode they share one capacity, which Allot cannot price twice: left out, said.
    doc["system"]["optimizerData"]["optimizer"]["unlimited"] = json!(false);
    let s = planned(&doc);
    assert!(s.variants.iter().all(|v| !v.name.ends_with("@A100-spot")));
    assert_warned(&s, &["system.acceleratorData.accelerators[2].cost", "already priced", "limited mode"]);
}

// Probe 9: multiplicity 0.
#[test]
fn multiplicity_zero_is_one_gpu_per_unit() {
    let mut doc = base();
    doc["system"]["acceleratorData"]["accelerators"][1]["multiplicity"] = json!(0);
    let s = planned(&doc);
    assert_eq!(variant(&s, "granite:prod@MI300X").gpus_per_replica, 1);
    assert_warned(&s, &["system.acceleratorData.accelerators[1].multiplicity", "0"]);
}

// Probe 10: two servers of one name: the later one replaces the earlier, as WVA's map does.
#[test]
fn a_duplicate_server_name_keeps_the_later_entry() {
    let mut doc = base();
    server(&mut doc, 1)["name"] = json!("granite:prod");
    let s = planned(&doc);
    assert_eq!(model_names(&s), ["granite:prod"]);
    assert_eq!(s.variants.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["granite:prod@A100"]);
    assert_warned(&s, &["system.serverData.servers[1]", "replaces system.serverData.servers[0]"]);
}

// Probe 11: limited mode without capacityData: WVA has no GPUs to allocate.
#[test]
fn limited_mode_without_capacity_data_plans_nothing_and_says_so() {
    let mut doc = base();
    doc["system"].as_object_mut().expect("object").remove("capacityData");
    let s = planned(&doc);
    assert!(s.accelerators.iter().all(|a| a.gpus == 0));
    assert_warned(&s, &["system.capacityData", "0 GPUs"]);
    // The minimums cannot be placed anywhere: dropped, with the WVA field named.
    assert!(s.models.iter().all(|m| m.min_replicas == 0));
    assert_warned(&s, &["system.serverData.servers[0].minNumReplicas", "dropped"]);
    let plan = allot::optimize::plan(&s);
    assert_eq!(plan.mode, PlanMode::NothingServable);
    assert!(plan.warnings.iter().any(|w| w.contains("nothing is servable")), "{:#?}", plan.warnings);
}

// Probe 12: minNumReplicas is "at least N wherever placed" (WVA sizes every candidate to it).
#[test]
fn the_minimum_holds_on_whichever_accelerator_is_cheapest() {
    let mut doc = base();
    doc["system"]["acceleratorData"]["accelerators"][0]["cost"] = json!(400.0);
    doc["system"]["acceleratorData"]["accelerators"][1]["cost"] = json!(20.0);
    let s0 = server(&mut doc, 0);
    s0["minNumReplicas"] = json!(2);
    s0["currentAlloc"] = json!({"load": {"arrivalRate": 0}});
    doc["system"]["serverData"]["servers"].as_array_mut().expect("list").truncate(1);
    let s = planned(&doc);
    let plan = allot::optimize::plan(&s);
    let replicas = |name: &str| plan.variants.iter().find(|v| v.name == name).map_or(0, |v| v.replicas);
    // Two replicas in total, both on the cheap MI300X (pinning them to A100 cost 20× more).
    assert_eq!((replicas("granite:prod@A100"), replicas("granite:prod@MI300X")), (0, 2), "{:#?}", plan.variants);
    assert!((plan.cost_usd_per_hour - 0.40).abs() < 1e-9, "{}", plan.cost_usd_per_hour);
}

// Probe 13: a GPU count that overflows 32 bits is refused, not wrapped.
#[test]
fn an_accelerator_count_that_overflows_is_refused_not_wrapped() {
    let mut doc = base();
    doc["system"]["modelData"]["models"][1]["accCount"] = json!(2_147_483_649_i64);
    doc["system"]["acceleratorData"]["accelerators"][1]["multiplicity"] = json!(2);
    let s = planned(&doc);
    assert!(s.variants.iter().all(|v| !v.name.ends_with("@MI300X")));
    assert!(s.variants.iter().all(|v| v.gpus_per_replica <= 1024));
    assert_warned(&s, &["system.modelData.models[1].accCount", "2147483649 × multiplicity 2 = 4294967298 GPUs"]);
}

// Probe 14: a negative token count: WVA allocates nothing to that server.
#[test]
fn negative_input_tokens_skip_the_server_naming_the_wva_field() {
    let mut doc = base();
    server(&mut doc, 0)["currentAlloc"]["load"]["avgInTokens"] = json!(-1000);
    let s = planned(&doc);
    assert_eq!(model_names(&s), ["llama:prod"]);
    assert_warned(&s, &["system.serverData.servers[0].currentAlloc.load.avgInTokens", "got -1000"]);
}

// Probes 15 and 16: WVA's saturation settings, which Allot's fair share replaces.
#[test]
fn saturation_policy_and_delayed_best_effort_are_warned_about() {
    let mut doc = base();
    doc["system"]["optimizerData"]["optimizer"] =
        json!({"unlimited": false, "saturationPolicy": "PriorityRoundRobin", "delayedBestEffort": true});
    let s = planned(&doc);
    assert_warned(&s, &["system.optimizerData.optimizer.saturationPolicy", "\"PriorityRoundRobin\"", "ignored"]);
    assert_warned(&s, &["system.optimizerData.optimizer.delayedBestEffort", "ignored"]);
    // "None", WVA's default, says nothing.
    doc["system"]["optimizerData"]["optimizer"] = json!({"saturationPolicy": "None"});
    doc["system"]["capacityData"] = base()["system"]["capacityData"].clone();
    assert!(planned(&doc).warnings.iter().all(|w| !w.contains("saturationPolicy")));
}

// Probe 17: a misspelled key is named (WVA drops it silently).
#[test]
fn misspelled_keys_are_named_in_a_warning() {
    let mut doc = base();
    let s0 = server(&mut doc, 0);
    s0["minNumReplica"] = json!(3);
    s0["currentAlloc"]["load"]["arivalRate"] = json!(5);
    let s = planned(&doc);
    assert_warned(&s, &["system.serverData.servers[0].minNumReplica", "not a field"]);
    assert_warned(&s, &["system.serverData.servers[0].currentAlloc.load.arivalRate", "not a field"]);
    assert_eq!(s.models[0].min_replicas, 1, "the misspelled key does not count");
}

// Probe 18: a negative arrival rate is reported in WVA's field and unit.
#[test]
fn a_negative_arrival_rate_is_reported_as_the_user_wrote_it() {
    let mut doc = base();
    server(&mut doc, 0)["currentAlloc"]["load"]["arrivalRate"] = json!(-120);
    let s = planned(&doc);
    assert_eq!(model_names(&s), ["llama:prod"]);
    assert_warned(&s, &["system.serverData.servers[0].currentAlloc.load.arrivalRate", "req/min", "got -120"]);
    // When it is the only server, it is the error.
    doc["system"]["serverData"]["servers"].as_array_mut().expect("list").truncate(1);
    let found = problems(&doc);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("system.serverData.servers[0].currentAlloc.load.arrivalRate") && p.contains("-120")),
        "{found:#?}"
    );
    assert!(found.iter().all(|p| !p.contains("arrival_rate_rps")), "{found:#?}");
}

// Probe 19: keys match regardless of case, as in Go's encoding/json.
#[test]
fn keys_in_another_case_are_read_as_wva_reads_them() {
    let mut doc = base();
    let p = doc["system"]["modelData"]["models"][1].as_object_mut().expect("object");
    let count = p.remove("accCount").expect("present");
    p.insert("AccCount".into(), json!(2));
    assert_eq!(count, json!(1));
    let s = planned(&doc);
    assert_eq!(variant(&s, "granite:prod@MI300X").gpus_per_replica, 2);
    assert_warned(&s, &["system.modelData.models[1].AccCount", "read as", "accCount"]);
}

// Probe 20: null is Go's zero value.
#[test]
fn null_fields_are_zero_values() {
    let mut doc = base();
    server(&mut doc, 0)["minNumReplicas"] = Value::Null;
    server(&mut doc, 0)["class"] = Value::Null;
    let s = planned(&doc);
    let granite = s.models.iter().find(|m| m.name == "granite:prod").expect("planned");
    assert_eq!(granite.min_replicas, 0);
    assert_eq!(s.classes[granite.demands[0].class].name, "Free");
}

// Probe 21: priorities outside 1..=100 become 100.
#[test]
fn a_priority_outside_wvas_range_is_100() {
    let mut doc = base();
    doc["system"]["serviceClassData"]["serviceClasses"][0]["priority"] = json!(-3);
    let s = planned(&doc);
    assert_eq!(s.classes.iter().find(|c| c.name == "Premium").expect("class").priority, 100);
}

// Probe 22: a throughput target, which WVA uses instead of the arrival rate.
#[test]
fn a_tps_target_is_ignored_with_a_warning() {
    let mut doc = base();
    doc["system"]["serviceClassData"]["serviceClasses"][0]["modelTargets"][0]["slo-tps"] = json!(2000);
    let s = planned(&doc);
    assert_warned(&s, &["system.serviceClassData.serviceClasses[0].modelTargets[0].slo-tps", "ignored"]);
}

// Probe 23: no latency target at all: WVA sizes to the replica's maximum rate.
#[test]
fn no_latency_target_is_sized_by_throughput() {
    let mut doc = base();
    doc["system"]["serviceClassData"]["serviceClasses"][0]["modelTargets"][0] = json!({"model": "granite-13b"});
    let s = planned(&doc);
    assert_warned(&s, &["modelTargets[0]", "no slo-itl or slo-ttft", "throughput"]);
    let plan = allot::optimize::plan(&s);
    assert!(plan.models.iter().all(|m| m.served_fraction > 0.99), "{:#?}", plan.models);
}

// Probe 24: arrivals but zero output tokens: WVA treats the server as idle.
#[test]
fn zero_output_tokens_is_an_idle_server() {
    let mut doc = base();
    server(&mut doc, 0)["currentAlloc"]["load"]["avgOutTokens"] = json!(0);
    let s = planned(&doc);
    let granite = s.models.iter().find(|m| m.name == "granite:prod").expect("planned");
    assert!(granite.demands.is_empty());
    assert_eq!(granite.min_replicas, 1);
    assert_warned(&s, &["system.serverData.servers[0].currentAlloc.load.avgOutTokens", "idle"]);
}

// Probe 25: when no server can be planned, every reason is an error.
#[test]
fn a_document_with_no_plannable_server_lists_every_reason() {
    let mut doc = base();
    server(&mut doc, 0)["class"] = json!("Gold");
    server(&mut doc, 1)["currentAlloc"]["load"]["avgOutTokens"] = json!(-5);
    let found = problems(&doc);
    assert!(
        found.iter().any(|p| p.starts_with("system.serverData.servers[0].class") && p.contains("\"Gold\"")),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|p| p.starts_with("system.serverData.servers[1].currentAlloc.load.avgOutTokens")),
        "{found:#?}"
    );
    assert!(found.iter().any(|p| p.contains("no server can be planned")), "{found:#?}");
}

// Probe 26: a value of the wrong type fails the document (as it fails Go's reader), at its path.
#[test]
fn a_wrong_type_names_the_wva_path() {
    let mut doc = base();
    doc["system"]["acceleratorData"]["accelerators"][0]["cost"] = json!("forty");
    let found = problems(&doc);
    assert!(found[0].starts_with("system.acceleratorData.accelerators[0].cost"), "{found:#?}");
}

#[test]
fn unlimited_mode_gives_every_type_ample_gpus() {
    let mut doc = base();
    doc["system"]["optimizerData"]["optimizer"]["unlimited"] = json!(true);
    doc["system"].as_object_mut().expect("object").remove("capacityData");
    let s = planned(&doc);
    assert!(s.accelerators.iter().all(|a| a.gpus == 100_000));
    assert_warned(&s, &["unlimited mode"]);
}

#[test]
fn later_classes_and_targets_of_one_name_replace_earlier_ones() {
    let mut doc = base();
    let classes = doc["system"]["serviceClassData"]["serviceClasses"].as_array_mut().expect("list");
    let mut again = classes[0].clone();
    again["priority"] = json!(5);
    classes.push(again);
    let s = planned(&doc);
    assert_eq!(s.classes.iter().find(|c| c.name == "Premium").expect("class").priority, 5);
    assert_warned(&s, &["system.serviceClassData.serviceClasses[2]", "replaces"]);
}

#[test]
fn a_wva_document_in_yaml_is_read_too() {
    let yaml = serde_saphyr::to_string(&base()).expect("serializes");
    let s = scenario::load(&yaml).expect("the same document as YAML");
    assert_eq!(model_names(&s), ["granite:prod", "llama:prod"]);
}

#[test]
fn the_order_of_servers_does_not_change_the_plan() {
    let mut reversed = base();
    reversed["system"]["serverData"]["servers"].as_array_mut().expect("list").reverse();
    let (a, b) = (allot::optimize::plan(&planned(&base())), allot::optimize::plan(&planned(&reversed)));
    let replicas = |p: &allot::plan::Plan| p.variants.iter().map(|v| (v.name.clone(), v.replicas)).collect::<Vec<_>>();
    assert_eq!(replicas(&a), replicas(&b));
}
