"""The pure parts of scripts/compare-llama-cpp: parsing each tool's output, summarizing runs,
rendering the Markdown report and writing files atomically.

Kept apart from the driver so that they can be checked without running either tool:
`python3 scripts/compare_llama_cpp_lib.py` runs the self-tests at the bottom on canned outputs
shaped like those of the pinned llama.cpp (llama_cpp_python-0.3.36) and of evalq's CLI.
"""
import json
import math
import os
import re
import statistics
import tempfile

# evalq's `--formats all` list, in its order (src/cli/mod.rs, RunArgs::formats).
FORMATS_ALL = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q3_K_M",
               "Q2_K", "IQ4_NL", "IQ4_XS"]

# File types both llama-quantize and `evalq quantize --format` accept (evalq-only mixes such as
# Q4_K_L and the `_pure` variants have no llama.cpp counterpart to compare with).
KNOWN_FORMATS = ["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_0", "Q5_1", "Q4_K_M",
                 "Q4_K_S", "Q4_0", "Q4_1", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K", "IQ4_NL", "IQ4_XS"]

# The measurements `--skip` can leave out.
METRICS = ["pp", "tg", "quantize", "ppl"]


class ParseError(ValueError):
    """A tool's output did not have the shape this script relies on."""


def parse_formats(text):
    """`all` or a comma list, upper-cased and checked against KNOWN_FORMATS; order kept,
    duplicates dropped."""
    if text.strip().lower() == "all":
        return list(FORMATS_ALL)
    out = []
    for item in text.split(","):
        name = item.strip().upper()
        if not name:
            continue
        if name not in KNOWN_FORMATS:
            raise ValueError(f"unknown format '{item.strip()}' (known: all, {', '.join(KNOWN_FORMATS)})")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("--formats names no format")
    return out


def parse_skip(text):
    """A comma list of METRICS (empty: skip nothing)."""
    out = set()
    for item in (text or "").split(","):
        name = item.strip().lower()
        if not name:
            continue
        if name not in METRICS:
            raise ValueError(f"unknown metric '{item.strip()}' in --skip (known: {', '.join(METRICS)})")
        out.add(name)
    return out


# ---------------------------------------------------------------------------------------------
# Statistics


def summarize(values):
    """Median, min and max of the runs, plus the runs themselves; None for no runs."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def ratio(num, den):
    """num/den of two summaries' medians, None when either is missing or den is zero."""
    if not num or not den or not den["median"]:
        return None
    return num["median"] / den["median"]


# ---------------------------------------------------------------------------------------------
# Parsing the tools' outputs


def _json_loads_lenient(text):
    """json.loads that also takes the bare nan/inf tokens C's printf writes for non-finite
    doubles (llama-bench prints its numbers with %f, not as JSON), mapping them to null."""
    cleaned = re.sub(r"(?<=[:\[,\s])-?(?:nan|inf)(?=\s*[,\]\}])", "null", text, flags=re.IGNORECASE)
    return json.loads(cleaned)


def parse_llama_bench_json(text):
    """llama-bench -o json: a list of tests; the one with n_prompt > 0 and n_gen == 0 is pp, the
    one with n_gen > 0 and n_prompt == 0 is tg. Returns t/s (avg_ts: the mean of the repetitions,
    which with -r 1 is the single run) and the settings llama-bench used."""
    try:
        tests = _json_loads_lenient(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"llama-bench output is not JSON: {e}") from e
    if not isinstance(tests, list) or not tests:
        raise ParseError("llama-bench printed no tests")
    out = {"pp_tps": None, "tg_tps": None}
    for t in tests:
        if t.get("n_prompt", 0) > 0 and t.get("n_gen", 0) == 0:
            out["pp_tps"] = float(t["avg_ts"])
            out["pp_samples_ts"] = t.get("samples_ts")
        elif t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0:
            out["tg_tps"] = float(t["avg_ts"])
            out["tg_samples_ts"] = t.get("samples_ts")
    first = tests[0]
    fa = first.get("flash_attn")
    out["settings"] = {
        "build_commit": first.get("build_commit"),
        "build_number": first.get("build_number"),
        "cpu_info": first.get("cpu_info"),
        "backends": first.get("backends"),
        "n_threads": first.get("n_threads"),
        "n_batch": first.get("n_batch"),
        "n_ubatch": first.get("n_ubatch"),
        "type_k": first.get("type_k"),
        "type_v": first.get("type_v"),
        # llama_flash_attn_type: -1 auto, 0 disabled, 1 enabled.
        "flash_attn": {-1: "auto", 0: "disabled", 1: "enabled"}.get(fa, fa),
        "repack": first.get("repack"),
        "model_type": first.get("model_type"),
        "model_size": first.get("model_size"),
    }
    return out


# llama.cpp's common log prefixes every line with minutes.seconds.milliseconds.microseconds since
# start (common_init turns timestamps on) and a level letter.
_STAMP = r"(\d+)\.(\d+)\.(\d+)\.(\d+) I (?:perplexity: )?"


def _stamp_seconds(log, message):
    # The stamp directly before the message: llama-perplexity's progress output (stdout) can share
    # a line with a stderr log line, so nothing may stand in between.
    m = re.search(_STAMP + re.escape(message), log)
    if not m:
        return None
    return int(m.group(1)) * 60 + int(m.group(2)) + int(m.group(3)) / 1e3 + int(m.group(4)) / 1e6


def parse_perplexity_log(log):
    """llama-perplexity's stdout+stderr: the final PPL and its error, the evaluation-loop seconds
    (from the "calculating perplexity" line to "Final estimate", by the log's own timestamps;
    None when either line has no stamp) and how the automatic flash-attention choice resolved."""
    m = re.search(r"Final estimate: PPL = ([0-9.]+|nan|inf) \+/- ([0-9.]+|nan|inf)", log)
    if not m:
        raise ParseError("no 'Final estimate: PPL = ...' line in llama-perplexity's output")
    start = _stamp_seconds(log, "calculating perplexity")
    end = _stamp_seconds(log, "Final estimate")
    seq = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", log)
    fa = None
    if re.search(r"Flash Attention enabled", log):
        fa = "enabled"
    elif re.search(r"Flash Attention not supported, set to disabled", log):
        fa = "disabled"
    return {
        "ppl": float(m.group(1)),
        "ppl_err": float(m.group(2)),
        "eval_seconds": (end - start) if start is not None and end is not None else None,
        "n_chunks": int(seq.group(1)) if seq else None,
        "n_ctx": int(seq.group(2)) if seq else None,
        "n_batch": int(seq.group(3)) if seq else None,
        "n_seq": int(seq.group(4)) if seq else None,
        "flash_attn": fa,
    }


def parse_llama_quantize_stdout(text):
    """llama-quantize's own "quantize time = N ms" (load, quantize and write, after start-up)."""
    m = re.search(r"quantize time =\s*([0-9.]+) ms", text)
    return float(m.group(1)) / 1e3 if m else None


def parse_evalq_quantize_stdout(text):
    """`evalq quantize`'s "wall time: A s (quantization B s)" line: (A, B), Nones when absent."""
    m = re.search(r"wall time:\s*([0-9.]+) s \(quantization ([0-9.]+) s\)", text)
    return (float(m.group(1)), float(m.group(2))) if m else (None, None)


def parse_evalq_speed_json(text):
    """`evalq bench speed --json`: {"pp_tps", "tg_tps", "pp_runs", "tg_runs"}, tokens/s."""
    try:
        j = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"evalq bench speed output is not JSON: {e}") from e
    for key in ("pp_tps", "tg_tps"):
        if not isinstance(j.get(key), (int, float)):
            raise ParseError(f"evalq bench speed JSON has no numeric '{key}'")
    bpt = j.get("tg_bytes_per_token")
    return {"pp_tps": float(j["pp_tps"]), "tg_tps": float(j["tg_tps"]),
            "pp_runs": j.get("pp_runs"), "tg_runs": j.get("tg_runs"),
            "tg_bytes_per_token": float(bpt) if isinstance(bpt, (int, float)) and bpt > 0 else None}


def parse_evalq_bandwidth_json(text):
    """`evalq bench bandwidth --json`: the best multi-threaded read GB/s (10^9 bytes/s)."""
    try:
        j = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"evalq bench bandwidth output is not JSON: {e}") from e
    if not isinstance(j.get("best_gbps"), (int, float)) or j["best_gbps"] <= 0:
        raise ParseError("evalq bench bandwidth JSON has no positive 'best_gbps'")
    return float(j["best_gbps"])


def parse_evalq_ppl_json(text):
    """`evalq ppl --json`: ppl, its error and `seconds` (the evaluation loop alone)."""
    try:
        j = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"evalq ppl output is not JSON: {e}") from e
    for key in ("ppl", "seconds"):
        if not isinstance(j.get(key), (int, float)):
            raise ParseError(f"evalq ppl JSON has no numeric '{key}'")
    return {"ppl": float(j["ppl"]), "ppl_err": j.get("ppl_stderr"), "eval_seconds": float(j["seconds"]),
            "n_chunks": j.get("n_chunks"), "isa": j.get("isa"), "threads": j.get("threads"),
            "format": j.get("format")}


def parse_cpu_model(cpuinfo):
    """/proc/cpuinfo's first "model name" (x86), else ARM's implementer/part codes, else None."""
    fields = {}
    for line in cpuinfo.splitlines():
        k, sep, v = line.partition(":")
        if sep and k.strip() not in fields and v.strip():
            fields[k.strip()] = v.strip()
    if "model name" in fields:
        return fields["model name"]
    if "CPU implementer" in fields:
        return f"CPU implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    return None


# ---------------------------------------------------------------------------------------------
# Rendering


def fmt_num(x, digits):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def fmt_cell(s, digits):
    """"median [min–max]"; "median" alone for a single run or when every run printed the same;
    "–" when not measured."""
    if not s:
        return "–"
    if len(s["runs"]) == 1 or fmt_num(s["min"], digits) == fmt_num(s["max"], digits):
        return fmt_num(s["median"], digits)
    return f"{fmt_num(s['median'], digits)} [{fmt_num(s['min'], digits)}–{fmt_num(s['max'], digits)}]"


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _metric(f, name):
    """The per-format record of one metric, or None when it was skipped."""
    return f.get(name)


def render_markdown(report):
    """The whole report: context, a combined table, then one table per metric."""
    m = report["machine"]
    s = report["settings"]
    out = []
    out.append(f"# evalq vs llama.cpp, {report['created']}")
    out.append("")
    out.append(f"- **Machine:** {m['cpu']}, {m['logical_cpus']} logical CPUs; {m['os']}")
    out.append(f"- **Threads:** {s['threads']} for both tools; **runs:** {s['runs']} per tool and measurement, "
               "alternated (llama.cpp, then evalq, in every run)")
    out.append(f"- **evalq:** {report['evalq']['version']} at git commit {report['evalq']['git_commit']}")
    out.append(f"- **llama.cpp:** {report['llama_cpp']['version']}, tools from `{report['llama_cpp']['bin']}`")
    out.append(f"- **Model:** {report['model']['source']} → F32 source `{report['model']['f32']}` "
               f"(made by llama-quantize --allow-requantize … F32)")
    if s.get("dataset"):
        out.append(f"- **Dataset:** `{s['dataset']}`")
    if m.get("load_avg_start") or m.get("load_avg_end"):
        la = [", ".join(f"{x:.2f}" for x in v) if v else "?" for v in (m.get("load_avg_start"), m.get("load_avg_end"))]
        out.append(f"- **Load average** (1, 5, 15 min) before the runs: {la[0]}; after: {la[1]} "
                   "(other work on the machine skews the figures)")
    if s["skip"]:
        out.append(f"- **Skipped:** {', '.join(s['skip'])}")
    out.append("")
    out.append("Cells are median [min–max] over the runs. **Every ratio is oriented so that > 1 means evalq is "
               "faster**: evalq/llama.cpp for tokens per second, llama.cpp/evalq for seconds.")
    out.append("")

    formats = report["formats"]
    out.append("## All metrics")
    out.append("")
    # One group of three columns per measured metric: llama.cpp, evalq, ratio (> 1: evalq faster).
    groups = [("pp", f"pp{s.get('pp_tokens', 512)} t/s", 1), ("tg", f"tg{s.get('tg_tokens', 128)} t/s", 1),
              ("quantize", "quantize s", 2), ("ppl", f"ppl{s['ppl_chunks']} s", 2)]
    groups = [g for g in groups if g[0] not in s["skip"]]
    header = ["format"]
    for _, label, _ in groups:
        header += [f"{label} llama.cpp", f"{label} evalq", f"{label.split()[0]} ×"]
    rows = []
    for f in formats:
        row = [f["format"]]
        for key, _, digits in groups:
            m = _metric(f, key) or {}
            row += [fmt_cell(m.get("llama"), digits), fmt_cell(m.get("evalq"), digits), fmt_ratio(m.get("ratio"))]
        rows.append(row)
    out.append(_table(header, rows))
    out.append("")

    if "pp" not in s["skip"] or "tg" not in s["skip"]:
        lb = report.get("llama_bench_settings") or {}
        out.append("## Prompt processing (pp512) and generation (tg128), tokens/s")
        out.append("")
        out.append(f"llama.cpp: `{s['commands']['bench_llama']}` once per run (llama-bench warms up with one "
                   f"pp512 and one token first). llama-bench used flash_attn={lb.get('flash_attn')} (its default"
                   f"{'; resolved to ' + report['llama_flash_attn'] if report.get('llama_flash_attn') else ''}), "
                   f"KV cache {lb.get('type_k')}/{lb.get('type_v')}, "
                   f"n_batch {lb.get('n_batch')}, n_ubatch {lb.get('n_ubatch')}, repack={lb.get('repack')}, "
                   f"{lb.get('n_threads')} threads. "
                   f"evalq: `{s['commands']['bench_evalq']}` once per run. Both load the file llama-quantize "
                   f"wrote, with its native tensor types.")
        out.append("")
        rows = []
        for f in formats:
            pp, tg = _metric(f, "pp") or {}, _metric(f, "tg") or {}
            rows.append([f["format"], fmt_cell(pp.get("llama"), 1), fmt_cell(pp.get("evalq"), 1),
                         fmt_ratio(pp.get("ratio")), fmt_cell(tg.get("llama"), 1), fmt_cell(tg.get("evalq"), 1),
                         fmt_ratio(tg.get("ratio"))])
        out.append(_table(["format", "pp512 llama.cpp", "pp512 evalq", "evalq/llama.cpp",
                           "tg128 llama.cpp", "tg128 evalq", "evalq/llama.cpp"], rows))
        out.append("")

    bw = report.get("bandwidth") or {}
    if "tg" not in s["skip"] and bw.get("peak_gbps"):
        peak = bw["peak_gbps"]
        out.append("## Generation bandwidth")
        out.append("")
        out.append(f"Bytes a generated token streams (every weight matrix once, the embedding row, the KV cache; "
                   f"evalq's count, averaged over the {s.get('tg_tokens', 128)} positions) times the tg "
                   f"median, against the machine's peak read bandwidth: `{bw['command']}`, best "
                   f"{', '.join(f'{x:.1f}' for x in bw['runs_gbps'])} GB/s before and after the runs; "
                   f"the higher, {peak:.1f} GB/s, is used. Both tools read the same file, so llama.cpp's "
                   "column uses the same bytes per token.")
        out.append("")
        rows = []
        for f in formats:
            tg = _metric(f, "tg") or {}
            bpt = tg.get("bytes_per_token")
            cells = [f["format"], fmt_num(bpt / 1e6 if bpt else None, 1)]
            for side in ("llama", "evalq"):
                med = (tg.get(side) or {}).get("median")
                gbps = bpt * med / 1e9 if bpt and med else None
                cells += [fmt_num(gbps, 2), fmt_num(100 * gbps / peak if gbps else None, 1)]
            rows.append(cells)
        out.append(_table(["format", "MB/token", "llama.cpp GB/s", "llama.cpp % of peak", "evalq GB/s",
                           "evalq % of peak"], rows))
        out.append("")

    if "quantize" not in s["skip"]:
        out.append("## Quantization time, seconds (F32 source → format)")
        out.append("")
        out.append(f"Wall time of the whole process, start-up and file write included: "
                   f"`{s['commands']['quantize_llama']}` vs `{s['commands']['quantize_evalq']}`. "
                   "The inner columns are each tool's own timer (llama-quantize's \"quantize time\", evalq's "
                   "\"quantization\" seconds, which excludes reading the source and writing the file). "
                   "\"identical\" compares the two output files byte for byte (last run).")
        out.append("")
        rows = []
        for f in formats:
            q = _metric(f, "quantize") or {}
            ident = q.get("identical")
            rows.append([f["format"], fmt_cell(q.get("llama"), 2), fmt_cell(q.get("evalq"), 2),
                         fmt_ratio(q.get("ratio")), fmt_cell(q.get("llama_inner"), 2),
                         fmt_cell(q.get("evalq_inner"), 2),
                         "–" if ident is None else ("yes" if ident else "**no**"),
                         fmt_num(f.get("file_bytes") / 2**20 if f.get("file_bytes") else None, 1)])
        out.append(_table(["format", "llama.cpp s", "evalq s", "llama.cpp/evalq", "llama.cpp inner s",
                           "evalq inner s", "identical", "MiB"], rows))
        out.append("")

    if "ppl" not in s["skip"]:
        out.append(f"## Perplexity, {s['ppl_chunks']} chunks of {s['ppl_ctx']}, seconds")
        out.append("")
        out.append(f"Wall time of the whole process (model load and tokenizing the whole test file included): "
                   f"`{s['commands']['ppl_llama']}` vs `{s['commands']['ppl_evalq']}`. The \"loop\" columns "
                   "time the evaluation alone: llama-perplexity's log stamps from \"calculating perplexity\" to "
                   "\"Final estimate\", evalq's `seconds`. llama-perplexity evaluates "
                   f"{report.get('llama_ppl_n_seq') or '?'} chunks per batch (its default -b 2048 over -c 512) "
                   "with flash attention auto (llama.cpp's default)"
                   + (f", which resolved to {report['llama_flash_attn']} (read from an untimed one-chunk "
                      "llama-perplexity -lv 4 run)." if report.get("llama_flash_attn") else "."))
        out.append("")
        rows = []
        for f in formats:
            p = _metric(f, "ppl") or {}
            rows.append([f["format"], fmt_cell(p.get("llama"), 2), fmt_cell(p.get("evalq"), 2),
                         fmt_ratio(p.get("ratio")), fmt_cell(p.get("llama_loop"), 2),
                         fmt_cell(p.get("evalq_loop"), 2), fmt_ratio(p.get("loop_ratio")),
                         fmt_cell(p.get("llama_ppl"), 4), fmt_cell(p.get("evalq_ppl"), 4)])
        out.append(_table(["format", "llama.cpp s", "evalq s", "llama.cpp/evalq", "llama.cpp loop s",
                           "evalq loop s", "loop llama.cpp/evalq", "PPL llama.cpp", "PPL evalq"], rows))
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Files


def _finite(obj):
    """A copy of obj with every NaN/inf float replaced by None: strict JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def json_text(obj):
    """The report as strict JSON (non-finite numbers as null), pretty-printed."""
    return json.dumps(_finite(obj), indent=2, allow_nan=False, default=str) + "\n"


def write_atomic(path, data):
    """Writes text or bytes to a temporary file beside `path`, flushes it to disk, then renames it
    over `path`: readers see the old file or the whole new one, never a part."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# ---------------------------------------------------------------------------------------------
# Self-tests: python3 scripts/compare_llama_cpp_lib.py

if __name__ == "__main__":
    import unittest

    BENCH = """[
  {
    "build_commit": "abc1234",
    "build_number": 7000,
    "cpu_info": "AMD EPYC",
    "n_batch": 2048,
    "n_ubatch": 512,
    "n_threads": 2,
    "type_k": "f16",
    "type_v": "f16",
    "flash_attn": -1,
    "repack": true,
    "n_prompt": 512,
    "n_gen": 0,
    "avg_ts": 812.5,
    "stddev_ts": 0.000000,
    "samples_ns": [ 630153846 ],
    "samples_ts": [ 812.5 ]
  },
  {
    "build_commit": "abc1234",
    "build_number": 7000,
    "n_prompt": 0,
    "n_gen": 128,
    "avg_ts": 97.25,
    "stddev_ts": -nan,
    "samples_ns": [ 1316195372 ],
    "samples_ts": [ 97.25 ]
  }
]
"""
    PPL_LOG = (
        "0.00.120.001 I build: 7000 (abc1234)\n"
        "0.01.002.000 I llama_context: Flash Attention enabled\n"
        "0.02.500.000 I perplexity: calculating perplexity over 20 chunks, n_ctx=512, batch_size=2048, n_seq=4\n"
        "[1]20.1,[2]21.3,0.09.750.250 I Final estimate: PPL = 21.4321 +/- 0.81234\n"
    )

    class T(unittest.TestCase):
        def test_formats(self):
            self.assertEqual(parse_formats("all"), FORMATS_ALL)
            self.assertEqual(parse_formats("q4_k_m, Q8_0,q4_k_m"), ["Q4_K_M", "Q8_0"])
            with self.assertRaises(ValueError):
                parse_formats("Q4_K_L")
            with self.assertRaises(ValueError):
                parse_formats(" , ")
            self.assertEqual(parse_skip("pp, TG"), {"pp", "tg"})
            self.assertEqual(parse_skip(""), set())
            with self.assertRaises(ValueError):
                parse_skip("kld")

        def test_summary_and_ratio(self):
            s = summarize([3.0, 1.0, 2.0, None])
            self.assertEqual((s["median"], s["min"], s["max"]), (2.0, 1.0, 3.0))
            self.assertIsNone(summarize([]))
            self.assertAlmostEqual(ratio(summarize([4.0]), summarize([2.0])), 2.0)
            self.assertIsNone(ratio(None, s))
            self.assertEqual(fmt_cell(summarize([1.0, 2.0, 3.0]), 1), "2.0 [1.0–3.0]")
            self.assertEqual(fmt_cell(summarize([1.234]), 2), "1.23")
            self.assertEqual(fmt_cell(None, 2), "–")
            self.assertEqual(fmt_cell(summarize([1.2341, 1.2342]), 3), "1.234")

        def test_llama_bench(self):
            r = parse_llama_bench_json(BENCH)
            self.assertEqual((r["pp_tps"], r["tg_tps"]), (812.5, 97.25))
            self.assertEqual(r["settings"]["flash_attn"], "auto")
            self.assertEqual(r["settings"]["n_threads"], 2)
            with self.assertRaises(ParseError):
                parse_llama_bench_json("main: error")
            with self.assertRaises(ParseError):
                parse_llama_bench_json("[]")

        def test_perplexity_log(self):
            r = parse_perplexity_log(PPL_LOG)
            self.assertEqual((r["ppl"], r["ppl_err"]), (21.4321, 0.81234))
            self.assertAlmostEqual(r["eval_seconds"], 7.25025, places=6)
            self.assertEqual((r["n_chunks"], r["n_seq"], r["flash_attn"]), (20, 4, "enabled"))
            # Minutes roll over: 1.05 → 2.10 is 65 s.
            log = "1.05.000.000 I perplexity: calculating perplexity over 2 chunks\n" \
                  "2.10.000.000 I Final estimate: PPL = 1.0 +/- 0.1\n"
            self.assertAlmostEqual(parse_perplexity_log(log)["eval_seconds"], 65.0)
            self.assertIsNone(parse_perplexity_log("Final estimate: PPL = 1.0 +/- 0.1")["eval_seconds"])
            with self.assertRaises(ParseError):
                parse_perplexity_log("main: error: failed to load model")

        def test_quantize_and_evalq(self):
            self.assertAlmostEqual(parse_llama_quantize_stdout("\nmain: quantize time =  1234.50 ms\n"), 1.2345)
            self.assertIsNone(parse_llama_quantize_stdout(""))
            self.assertEqual(parse_evalq_quantize_stdout("wall time:   2.50 s (quantization 1.75 s)\n"), (2.5, 1.75))
            sp = parse_evalq_speed_json('{"pp_tps": 700.0, "tg_tps": 90, "pp_runs": [700.0], "tg_runs": [90.0]}')
            self.assertEqual((sp["pp_tps"], sp["tg_tps"]), (700.0, 90.0))
            self.assertIsNone(sp["tg_bytes_per_token"])
            sp = parse_evalq_speed_json('{"pp_tps": 1, "tg_tps": 2, "tg_bytes_per_token": 1.5e8}')
            self.assertEqual(sp["tg_bytes_per_token"], 1.5e8)
            with self.assertRaises(ParseError):
                parse_evalq_speed_json('{"pp_tps": 1}')
            self.assertEqual(parse_evalq_bandwidth_json('{"best_gbps": 29.5, "runs_gbps": [29.5]}'), 29.5)
            with self.assertRaises(ParseError):
                parse_evalq_bandwidth_json('{"best_gbps": 0}')
            p = parse_evalq_ppl_json('{"ppl": 21.4, "ppl_stderr": 0.8, "seconds": 6.5, "n_chunks": 20}')
            self.assertEqual((p["ppl"], p["eval_seconds"]), (21.4, 6.5))
            with self.assertRaises(ParseError):
                parse_evalq_ppl_json("not json")

        def test_cpu_model(self):
            self.assertEqual(parse_cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 9R14\n"), "AMD EPYC 9R14")
            self.assertEqual(parse_cpu_model("CPU implementer\t: 0x41\nCPU part\t: 0xd0c\n"),
                             "CPU implementer 0x41 part 0xd0c")
            self.assertIsNone(parse_cpu_model(""))

        def test_json_text(self):
            self.assertEqual(json.loads(json_text({"a": [float("nan"), 1.5], "b": float("inf")})),
                             {"a": [None, 1.5], "b": None})

        def test_write_atomic(self):
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "sub", "r.md")
                write_atomic(p, "one")
                write_atomic(p, "two")
                with open(p) as fh:
                    self.assertEqual(fh.read(), "two")
                self.assertEqual(os.listdir(os.path.dirname(p)), ["r.md"])

        def test_render(self):
            s1 = summarize([10.0, 12.0])
            rep = {
                "created": "2026-11-27T19:00:00Z",
                "machine": {"cpu": "AMD EPYC", "logical_cpus": 2, "os": "Linux", "load_avg_start": [0.5, 1, 2],
                            "load_avg_end": None},
                "settings": {"threads": 2, "runs": 2, "skip": ["tg"], "dataset": "/d/wiki.test.raw",
                             "ppl_chunks": 20, "ppl_ctx": 512,
                             "commands": {k: k for k in ("bench_llama", "bench_evalq", "quantize_llama",
                                                         "quantize_evalq", "ppl_llama", "ppl_evalq")}},
                "evalq": {"version": "0.1.0", "git_commit": "5d14783"},
                "llama_cpp": {"version": "b7000-abc1234", "bin": "/b"},
                "model": {"source": "m.gguf", "f32": "f32.gguf"},
                "formats": [{"format": "Q4_0", "file_bytes": 2**20,
                             "pp": {"llama": s1, "evalq": summarize([5.0, 6.0]), "ratio": 0.5},
                             "quantize": {"llama": s1, "evalq": s1, "ratio": 1.0, "identical": False}}],
            }
            md = render_markdown(rep)
            self.assertIn("| Q4_0 | 11.0 [10.0–12.0] | 5.5 [5.0–6.0] | 0.50× | 11.00 [10.00–12.00] |", md)
            self.assertIn("**no**", md)
            self.assertIn("> 1 means evalq is faster", md)
            self.assertIn("before the runs: 0.50, 1.00, 2.00; after: ?", md)
            # The skipped metric (tg) has no columns in the combined table; pp, quantize, ppl do.
            combined = md.split("## All metrics")[1].split("##")[0]
            self.assertNotIn("tg128", combined)
            self.assertIn("| format | pp512 t/s llama.cpp | pp512 t/s evalq | pp512 × | quantize s llama.cpp",
                          combined)
            self.assertNotIn("## Generation bandwidth", md)
            # With tg measured and a peak: GB/s = bytes per token × tg median, and % of the peak.
            rep["settings"]["skip"] = []
            rep["bandwidth"] = {"command": "bw", "runs_gbps": [19.0, 20.0], "peak_gbps": 20.0}
            rep["formats"][0]["tg"] = {"llama": summarize([80.0]), "evalq": summarize([100.0]), "ratio": 1.25,
                                       "bytes_per_token": 1.5e8}
            md = render_markdown(rep)
            self.assertIn("| Q4_0 | 150.0 | 12.00 | 60.0 | 15.00 | 75.0 |", md)

    unittest.main(verbosity=2)
