"""Smoke runs of the benchmark scripts (tiny sizes): they run end to end and write well-formed results.

Timings and ratios are never asserted (they depend on the machine and its load); only that the numbers
exist and are positive, and that the bare loop and `batchlabel run` produce the same labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_llm_hf import tiny_llm  # noqa: F401  (fixture: a tiny random Llama with SmolLM2's tokenizer)

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def _check_machine(info: dict) -> None:
    assert info["logical_cores"] >= 1 and info["ram_gib"] > 0 and info["cpu_model"]
    assert info["versions"]["torch"] and info["versions"]["transformers"] and info["versions"]["ray"]


def test_embed_throughput_smoke(tmp_path):
    _run("embed_throughput.py", "--smoke", "--out-dir", str(tmp_path), "--work-dir", str(tmp_path))
    result = json.loads((tmp_path / "embed_throughput_smoke.json").read_text())
    assert (tmp_path / "embed_throughput_smoke.md").read_text().startswith("# Embed throughput")
    _check_machine(result["machine"])
    assert result["smoke"] is True and result["max_length"] == 128
    for variant in ("notebook", "bare", "batchlabel"):
        row = result[variant]
        assert row["rows"] > 0 and _positive(row["rows_per_s"]), variant
        assert _positive(row["memory"]["peak_tree_rss_mib"]) and _positive(row["memory"]["peak_tree_pss_mib"]), variant
    assert result["bare"]["rows"] == result["batchlabel"]["rows"] == result["rows"]
    assert result["bare"]["best_batch_size"] in (8, 16)
    # the process tree of `batchlabel run` includes Ray's processes, not just the CLI
    assert "raylet" in result["batchlabel"]["memory"]["process_names"]
    assert result["batchlabel"]["memory"]["max_processes"] > 2
    assert all(_positive(v) for v in result["ratios"].values())
    # honesty check: the bare loop and batchlabel compute the same labels (same model, head, max_length)
    agree = result["agreement"]["b_vs_c"]
    assert agree["rows_compared"] == result["rows"] and agree["fraction"] >= 0.95
    assert result["agreement"]["a_vs_b"]["rows_compared"] == result["notebook"]["rows"]
    assert not list(tmp_path.glob("bl-embed-bench-*")), "the scratch dir is removed"


def test_scale_smoke(tmp_path):
    _run("scale.py", "--smoke", "--out-dir", str(tmp_path))
    result = json.loads((tmp_path / "scale_smoke.json").read_text())
    assert (tmp_path / "scale_smoke.md").exists()
    _check_machine(result["machine"])
    assert result["max_length"] == 32 and result["sizes"] == [20, 40]
    assert [run["rows"] for run in result["runs"]] == [20, 40]
    for run in result["runs"]:
        assert _positive(run["subprocess_wall_s"]) and _positive(run["rows_per_s"]) and _positive(run["time_per_row_s"])
        assert _positive(run["memory"]["peak_tree_rss_mib"]) and _positive(run["memory"]["peak_tree_pss_mib"])
        assert "raylet" in run["memory"]["process_names"]
    assert result["runs"][0]["time_per_row_ratio"] == pytest.approx(1.0)
    assert all(_positive(v) for v in result["largest_vs_smallest"].values())


def test_train_lora_smoke(tmp_path, tiny_llm):
    """The LoRA-vs-zero-shot benchmark end to end on a tiny random Llama (SmolLM2's tokenizer): 2 steps, 8 rows."""
    _run("train_lora.py", "--smoke", "--calibrated", "--base-model", tiny_llm, "--work-dir", str(tmp_path / "work"),
         "--out-dir", str(tmp_path))
    result = json.loads((tmp_path / "train_lora_smoke.json").read_text())
    assert (tmp_path / "train_lora_smoke.md").read_text().startswith("# LoRA fine-tune vs zero-shot")
    _check_machine(result["machine"])
    assert result["smoke"] is True and result["train"]["steps"] == 2 and _positive(result["train"]["train_wall_s"])
    for key in ("lora", "zero_shot_score", "zero_shot_score_calibrated"):
        row = result[key]
        assert row["rows"] == 8 and row["errors"] == 0 and 0 <= row["accuracy"] <= 1, key
        assert _positive(row["rows_per_s"]), key


def test_gpu_hf_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    _run("gpu_hf.py", "--smoke", "--out", str(out))
    result = json.loads(out.read_text())
    assert out.with_suffix(".md").exists()
    assert result["device"]["device"] == "cpu" and result["versions"]["torch"]
    (model,) = result["models"]
    assert model["model"] == "tiny" and model["params"] > 0 and model["prompt_tokens"] > 0
    methods = {row["method"] for row in model["variants"].values()}
    assert methods == {"bare", "score", "prompt"}
    for row in model["variants"].values():
        assert _positive(row["articles_per_s"]) and _positive(row["prompt_tokens_per_s"])
        assert _positive(row["time_vs_bare_same_batch"])
        assert row["pct_of_flop_ceiling"] is None  # no ceiling on CPU unless --peak-tflops


def test_gpu_hf_score_matches_a_plain_full_forward():
    """The engine-style score (prefill + cached continuation pass) equals label log-probs from one plain
    forward over prompt + label, so the GPU benchmark measures the real computation."""
    import torch

    sys.path.insert(0, str(BENCH))
    try:
        import gpu_hf
    finally:
        sys.path.remove(str(BENCH))
    model = gpu_hf.build_model("tiny", "cpu", torch.float32)
    work = gpu_hf.make_workload(model.config.vocab_size, 3, 6, (3, 7), 2, seed=1)
    scores = gpu_hf.score_pass(model, work["prompts"], work["continuations"], 2, "cpu")
    with torch.inference_mode():
        for i, prompt in enumerate(work["prompts"]):
            for j, cont in enumerate(work["continuations"]):
                ids = torch.tensor([prompt + cont])
                logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
                expected = sum(float(logprobs[len(prompt) - 1 + k, tok]) for k, tok in enumerate(cont))
                assert scores[i, j] == pytest.approx(expected, abs=1e-3)


def test_runner_ceiling_smoke(tmp_path):
    """No-op labeler end to end + planning alone, one side (this tree): the numbers exist and every row committed."""
    src = str(REPO / "src")
    _run("runner_ceiling.py", "--smoke", "--sides", f"now={src}", "--out-dir", str(tmp_path),
         "--work-dir", str(tmp_path / "work"))
    result = json.loads((tmp_path / "runner_ceiling_smoke.json").read_text())
    assert (tmp_path / "runner_ceiling_smoke.md").read_text().startswith("# Runner ceiling")
    _check_machine(result["machine"])
    run_case, plan_case = result["cases"]["e2e_smoke_many"], result["cases"]["plan_smoke"]
    for case in (run_case, plan_case):
        plan = case["sides"]["now"]["plan"]
        assert plan["returncode"] == 0 and not plan["killed"] and _positive(plan["driver_peak_rss_mib"])
    run = run_case["sides"]["now"]["run"]
    assert run["complete"] and run["rows_committed"] == run_case["rows"] == 3000
    assert _positive(run["rows_per_s_e2e"]) and _positive(run["tree_cpu_s"])
    assert 0 < run["driver_cpu_share"] < 1 and run["driver_rchar"] > 0 and run["driver_wchar"] > 0
    assert run["cpu_s_by_role"]["root"] > 0 and len(run["cpu_s_by_role"]) > 2  # the driver and Ray's processes


def test_llm_quality_smoke(tiny_llm, tmp_path):  # noqa: F811  (tiny_llm is the imported fixture)
    _run("llm_quality.py", "--smoke", "--model", tiny_llm, "--out-dir", str(tmp_path))
    result = json.loads((tmp_path / "llm_quality_smoke.json").read_text())
    _check_machine(result["machine"])
    rows = {r["config"]: r for r in result["configs"]}
    assert {"prompt_n1", "score_full_raw", "score_label_calibrated", "score_first_token_raw"} <= set(rows)
    for row in rows.values():
        assert row["rows"] == 8 and 0 <= row["accuracy"] <= 1 and _positive(row["articles_per_s"])
        lo, hi = row["accuracy_95"]
        assert lo <= row["accuracy"] <= hi and len(row["load"]) == 2
        assert sum(c["rows"] for c in row["per_class"].values()) == 8
    assert rows["prompt_n1"]["error_rows"] == 0  # constrained to the label
    assert "| labeler | engine | accuracy [95%]" in (tmp_path / "llm_quality_smoke.md").read_text()



def test_cpu_encoders_smoke(tmp_path):
    from test_train_classifier import tiny_bert

    encoder = tiny_bert(tmp_path / "tiny_bert")  # export / distillation cached beside it, in tmp_path
    _run("cpu_encoders.py", "--smoke", "--encoder", encoder, "--out-dir", str(tmp_path),
         "--work-dir", str(tmp_path / "work"))
    result = json.loads((tmp_path / "cpu_encoders_smoke.json").read_text())
    assert (tmp_path / "cpu_encoders_smoke.md").read_text().startswith("# CPU encoder backends")
    _check_machine(result["machine"])
    rows = {r["variant"]: r for r in result["rows"]}
    assert {"seed", "bare", "st", "torch", "onnx", "onnx-int8", "static", "batchlabel run static_100k"} <= set(rows)
    for row in rows.values():
        assert row["rows"] > 0 and _positive(row["rows_per_s"]) and 0 <= row["accuracy"] <= 1
    assert rows["onnx"]["agreement_with_torch"] == 1.0  # fp32 export: same labels as torch
    assert _positive(result["peak"]["fp32_flops_per_s"]) and 0 < rows["torch"]["share_of_fp32_peak"]
    assert rows["batchlabel run static_100k"]["rows"] == 200


def test_cascade_smoke(tmp_path):
    _run("cascade.py", "--smoke", "--work", str(tmp_path / "work"), "--out", str(tmp_path))
    result = json.loads((tmp_path / "cascade_smoke.json").read_text())
    assert (tmp_path / "cascade_smoke.md").read_text().startswith("# Cascades on Reuters R8 test")
    _check_machine(result["machine"])
    curve = result["cascades"]["minilm16 -> minilm64"]
    assert curve and all(0 < r["share_escalated"] < 1 and 0 <= r["accuracy"] <= 1 for r in curve)
    assert all(_positive(s["cpu_s_per_1000"]) for s in result["stages_alone"].values())
    check = result["real_cascade_check"]  # the real method: cascade on Ray agrees with the per-row simulation
    assert check["rows"] == 40 and check["escalated"] > 0 and check["disagreements_with_simulation"] == 0


def test_read_bytes_smoke(tmp_path):
    """Both sides (here both the working tree) run eval, review export and a night against moto behind the
    counting proxy; every command reads something and the figures are written."""
    _run("read_bytes.py", "--smoke", "--out-dir", str(tmp_path), "--before", str(REPO / "src"), timeout=600)
    result = json.loads((tmp_path / "read_bytes_smoke.json").read_text())
    _check_machine(result["machine"])
    for side in ("before", "after"):
        for command in ("eval", "review_export", "nightly"):
            assert result[side][command]["bytes_read"] > 0 and result[side][command]["get_requests"] > 0, (side, command)
    assert result["before"]["eval"]["bytes_read"] == result["after"]["eval"]["bytes_read"]  # the same code
    assert (tmp_path / "read_bytes_smoke.md").read_text().startswith("# Bytes read from S3")



def test_demo_throughput_smoke(tmp_path):
    """The README demo job (jobs/reuters_embed.yaml) on 40 rows against the bare loop on the same rows."""
    _run("demo_throughput.py", "--smoke", "--out-dir", str(tmp_path))
    result = json.loads((tmp_path / "demo_throughput_smoke.json").read_text())
    _check_machine(result["machine"])
    assert result["demo"]["rows"] == result["bare"]["rows"] == 40
    assert _positive(result["demo"]["rows_per_s"]) and _positive(result["bare"]["rows_per_s"])
    assert sum(a["rows"] for a in result["demo"]["actors"].values()) == 40
    assert (tmp_path / "demo_throughput_smoke.md").read_text().startswith("# The README demo")
