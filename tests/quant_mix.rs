//! llama.cpp's per-tensor type choice: for every file type of the reference (and the `_pure`
//! variants), planning the real model's tensors must give exactly the types llama-quantize wrote,
//! the same type histogram, and one "falling back" warning per fallback llama-quantize printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use evalq::gguf::{GgmlType, GgufFile};
use evalq::quant::mix::{
    self, file_type_names, ggml_type_name, mix_name, parse_file_type, plan, FileType, MixOptions, TensorPlan,
};

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference")
}

fn read_json(name: &str) -> serde_json::Value {
    let p = reference_dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// The real model's tensors (name, dims) in file order, or `None` (skip) when it is absent
/// outside CI.
fn model_tensors() -> Option<Vec<(String, Vec<u64>)>> {
    let p = evalq::data::fetch::default_model_path();
    if !p.exists() {
        if std::env::var_os("CI").is_some() {
            panic!("the default model is missing at {} (CI must run `evalq fetch` first)", p.display());
        }
        eprintln!("note: skipping, the default model is not at {} (run `evalq fetch`)", p.display());
        return None;
    }
    let f = GgufFile::open(&p).unwrap();
    Some(f.tensors.iter().map(|t| (t.name.clone(), t.dims.clone())).collect())
}

fn plan_for(key: &str, tensors: &[(String, Vec<u64>)]) -> Vec<TensorPlan> {
    let (ftype, opts) = parse_file_type(key).unwrap();
    plan(ftype, &opts, tensors, 30, 9, 3, 0).unwrap()
}

/// The "falling back" warnings of a llama-quantize log: tensor name → the rest of the line
/// after the name and " - ".
fn log_fallbacks(key: &str) -> BTreeMap<String, String> {
    let p = reference_dir().join(format!("llama-cpp-quantize-logs/{key}.log"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .filter(|l| l.contains("falling back"))
        .map(|l| {
            let rest = l.strip_prefix("warning: ").expect("warning line");
            let (name, msg) = rest.split_once(" - ").expect("name - message");
            (name.trim().to_string(), msg.trim().to_string())
        })
        .collect()
}

#[test]
fn every_reference_file_type_gets_llama_cpp_types_for_every_tensor() {
    let Some(tensors) = model_tensors() else { return };
    assert_eq!(tensors.len(), 272);
    let refs = read_json("llama-cpp-tensors.json");
    let files = read_json("llama-cpp-files.json");
    let refs = refs.as_object().unwrap();
    assert!(refs.len() >= 25, "reference has {} file types", refs.len());
    let mut failures = Vec::new();
    for (key, want) in refs {
        let plans = plan_for(key, &tensors);
        let want = want.as_object().unwrap();
        assert_eq!(plans.len(), want.len(), "{key}: tensor count");

        // Per-tensor types.
        let mut bad = 0;
        for p in &plans {
            let w = want[&p.name][0].as_str().unwrap();
            if p.ty.name() != w {
                bad += 1;
                if bad <= 5 {
                    failures.push(format!("{key}: {} is {} but llama.cpp has {w} ({:?})", p.name, p.ty, p.reason));
                }
            }
        }
        if bad > 5 {
            failures.push(format!("{key}: {bad} tensors differ in total"));
        }

        // Histogram against llama-cpp-files.json.
        let mut hist: BTreeMap<String, u64> = BTreeMap::new();
        for p in &plans {
            *hist.entry(p.ty.name().to_string()).or_default() += 1;
        }
        let want_hist: BTreeMap<String, u64> = files[key]["tensor_types"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        if hist != want_hist {
            failures.push(format!("{key}: histogram {hist:?} vs llama.cpp {want_hist:?}"));
        }

        // general.file_type.
        let (ftype, _) = parse_file_type(key).unwrap();
        let want_id = files[key]["general.file_type"].as_u64().unwrap();
        if u64::from(ftype.gguf_id()) != want_id {
            failures.push(format!("{key}: general.file_type {} vs {want_id}", ftype.gguf_id()));
        }

        // Fallback warnings: the same tensors, the same words.
        let log = log_fallbacks(key);
        let ours: BTreeMap<String, String> = plans
            .iter()
            .filter(|p| p.fallback_from.is_some())
            .map(|p| {
                let r = p.reason.as_deref().unwrap();
                let start = r.find("ncols").expect("fallback reason quotes llama.cpp");
                (p.name.clone(), r[start..].trim().to_string())
            })
            .collect();
        if ours.len() != log.len() {
            failures.push(format!("{key}: {} fallbacks vs {} in the log", ours.len(), log.len()));
        }
        for (name, msg) in &log {
            match ours.get(name) {
                Some(m) if m == msg => {}
                other => failures.push(format!("{key}: {name}: log says {msg:?}, we say {other:?}")),
            }
        }
        for p in &plans {
            if let Some(from) = p.fallback_from {
                assert_ne!(from, p.ty, "{key}: {}", p.name);
                assert!(p.reason.as_deref().unwrap().contains(&format!("type {:>7}", ggml_type_name(from))));
            }
        }
        eprintln!("{key:12}: {} tensors match, {} fallbacks, {hist:?}", plans.len() - bad, log.len());
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn processing_order_does_not_depend_on_input_order() {
    let Some(tensors) = model_tensors() else { return };
    let mut shuffled = tensors.clone();
    shuffled.reverse();
    shuffled.sort_by_key(|(n, _)| n.clone()); // lexicographic: blk.10 before blk.2
    for key in ["Q4_K_M", "Q3_K_M", "Q4_K_S", "IQ4_XS", "Q5_K_M"] {
        let a = plan_for(key, &tensors);
        let b = plan_for(key, &shuffled);
        let by_name: BTreeMap<&str, GgmlType> = a.iter().map(|p| (p.name.as_str(), p.ty)).collect();
        for p in &b {
            assert_eq!(by_name[p.name.as_str()], p.ty, "{key}: {}", p.name);
        }
        // The output keeps the input order.
        assert!(b.iter().zip(&shuffled).all(|(p, (n, _))| &p.name == n));
    }
}

#[test]
fn untied_output_and_options() {
    // A synthetic 8-layer model with a separate output.weight of 256-multiple rows.
    let mut t: Vec<(String, Vec<u64>)> =
        vec![("token_embd.weight".into(), vec![512, 1000]), ("output.weight".into(), vec![512, 1000])];
    for l in 0..8 {
        for (n, d) in [("attn_v", vec![512, 128]), ("ffn_down", vec![1024, 512]), ("attn_norm", vec![512])] {
            t.push((format!("blk.{l}.{n}.weight"), d));
        }
    }
    let get = |plans: &[TensorPlan], name: &str| plans.iter().find(|p| p.name == name).unwrap().ty;
    let p = plan(FileType::Q4_0, &MixOptions::default(), &t, 8, 8, 2, 0).unwrap();
    assert_eq!(get(&p, "token_embd.weight"), GgmlType::Q4_0, "untied token_embd keeps the base type");
    assert_eq!(get(&p, "output.weight"), GgmlType::Q6_K);
    assert_eq!(get(&p, "blk.0.attn_norm.weight"), GgmlType::F32);
    // Q4_K_M: attn_v and ffn_down with use_more_bits(i, 8): layers 0, 3, 6, 7.
    let p = plan(FileType::Q4_K_M, &MixOptions::default(), &t, 8, 8, 2, 0).unwrap();
    for l in 0..8 {
        let want = if [0, 3, 6, 7].contains(&l) { GgmlType::Q6_K } else { GgmlType::Q4_K };
        assert_eq!(get(&p, &format!("blk.{l}.attn_v.weight")), want, "attn_v {l}");
        assert_eq!(get(&p, &format!("blk.{l}.ffn_down.weight")), want, "ffn_down {l}");
    }
    // IQ4_XS with n_gqa >= 4 bumps attn_v to q5_K.
    let p = plan(FileType::IQ4_XS, &MixOptions::default(), &t, 8, 8, 2, 0).unwrap();
    assert_eq!(get(&p, "blk.3.attn_v.weight"), GgmlType::Q5_K);
    // Explicit options win, without fallback.
    let opts = MixOptions { pure: true, token_embd_type: Some(GgmlType::Q8_0), output_type: Some(GgmlType::F16) };
    let p = plan(FileType::Q2_K, &opts, &t, 8, 8, 2, 0).unwrap();
    assert_eq!(get(&p, "token_embd.weight"), GgmlType::Q8_0);
    assert_eq!(get(&p, "output.weight"), GgmlType::F16);
    assert_eq!(get(&p, "blk.0.ffn_down.weight"), GgmlType::Q2_K);
    // F16: every quantizable tensor F16, norms F32.
    let p = plan(FileType::F16, &MixOptions::default(), &t, 8, 8, 2, 0).unwrap();
    assert_eq!(get(&p, "output.weight"), GgmlType::F16);
    assert_eq!(get(&p, "blk.0.attn_norm.weight"), GgmlType::F32);
    // MoE: a tensor whose layer cannot be read is an error.
    let moe = vec![("ffn_down_exps.weight".to_string(), vec![256, 256, 4])];
    assert!(plan(FileType::Q4_K_M, &MixOptions::default(), &moe, 1, 8, 8, 4).is_err());
}

#[test]
fn file_type_names_parse_and_unknown_names_fail_clearly() {
    for t in FileType::all() {
        assert_eq!(FileType::from_name(t.name()), Some(*t));
        assert_eq!(FileType::from_name(&t.name().to_lowercase()), Some(*t));
        assert_eq!(FileType::from_gguf_id(t.gguf_id()), Some(*t));
        assert_eq!(parse_file_type(t.name()).unwrap(), (*t, MixOptions::default()));
    }
    let (t, o) = parse_file_type("q4_k_l").unwrap();
    assert_eq!((t, o.token_embd_type, o.pure), (FileType::Q4_K_M, Some(GgmlType::Q8_0), false));
    assert_eq!(mix_name(t, &o), "Q4_K_L");
    let (t, o) = parse_file_type("Q6_K_pure").unwrap();
    assert_eq!((t, o.pure), (FileType::Q6_K, true));
    assert_eq!(mix_name(t, &o), "Q6_K_pure");
    assert_eq!(parse_file_type("Q4_K").unwrap().0, FileType::Q4_K_M);
    assert!(file_type_names().contains(&"Q4_K_L"));
    for bad in ["Q7_K", "", "q4_k_x", "IQ2_XXS", "pure"] {
        let e = parse_file_type(bad).unwrap_err().to_string();
        assert!(e.contains("unknown file type") && e.contains("Q4_K_M") && e.contains("Q4_K_L"), "{e}");
    }
    assert_eq!(FileType::Q5_K_S.base_type(), GgmlType::Q5_K);
    assert!(!FileType::BF16.is_quantized());
    let _ = mix::llama_tensor_order(&["a"]);
}
