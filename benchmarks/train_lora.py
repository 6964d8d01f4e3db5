"""Benchmark (not a test): LoRA fine-tune of SmolLM2-135M on ~1,000 R8 rows vs the same model zero-shot.

    batchlabel models import-gguf smollm2-135m        # once: models/smollm2-135m
    python benchmarks/train_lora.py [--test-rows 300] [--skip-train] [--skip-zero-shot] [--train-set K=V ...]

1. `batchlabel train jobs/reuters_lora_train.yaml` (LoRA r=16 on q/k/v/o + score head, 1 epoch, 64 tokens),
   timed;
2. label the first ``--test-rows`` rows of R8 test (a fixed sample) with the adapter through `run_job`
   (jobs/reuters_lora_label.yaml, HF engine, merged adapter);
3. label the same rows zero-shot with the `score` method (label log-probabilities, hf engine) on the same
   base model (``--calibrated``: also with contextual calibration);
4. print and write out/bench_train_lora/result.json (accuracy, macro-F1, times, rows/s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "bench_train_lora"
BASE = REPO / "models" / "smollm2-135m"


def _metrics(result) -> dict:
    metrics = result.report.get("metrics", {})
    return {
        "rows": metrics.get("rows"),
        "accuracy": metrics.get("accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "wall_s": round(result.wall_time_s, 1),
        "rows_per_s": round(result.report.get("run", {}).get("rows_per_s", 0.0), 2),
        "errors": result.manifest.get("error_rows"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-rows", type=int, default=300, help="Label the first N rows of R8 test.")
    parser.add_argument("--skip-train", action="store_true", help="Reuse the adapter at out/bench_train_lora/adapter.")
    parser.add_argument("--skip-zero-shot", action="store_true", help="Do not run the zero-shot score baseline.")
    parser.add_argument("--calibrated", action="store_true", help="Also run the calibrated zero-shot score baseline.")
    parser.add_argument(
        "--train-set", action="append", default=[], metavar="KEY=VALUE",
        help="Override a field of jobs/reuters_lora_train.yaml (smoke runs: --train-set train.max_steps=2).",
    )
    args = parser.parse_args()
    os.chdir(REPO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not (BASE / "config.json").is_file():
        print(f"{BASE} is missing: run `batchlabel models import-gguf smollm2-135m` first", file=sys.stderr)
        return 2

    from batchlabel.methods import METHODS
    from batchlabel.pipeline import run_job
    from batchlabel.spec import load_job, parse_job
    from batchlabel.train import train_model

    OUT.mkdir(parents=True, exist_ok=True)
    adapter = OUT / "adapter"
    result: dict = {"base_model": str(BASE.relative_to(REPO)), "test_rows": args.test_rows, "threads": os.cpu_count()}

    train_spec = load_job(
        "jobs/reuters_lora_train.yaml",
        [f"train.output={adapter}", f"train.checkpoint_dir={OUT / 'checkpoints'}", *args.train_set],
    )
    if not args.skip_train:
        started = time.monotonic()
        trained = train_model(train_spec, progress=True)
        marker = json.loads((adapter / "batchlabel_classifier.json").read_text())
        result["train"] = {
            "rows": trained.rows,
            "validation": trained.validation,
            "steps": marker["global_step"],
            "train_wall_s": round(time.monotonic() - started, 1),
            "hyperparameters": {k: marker["train"][k] for k in ("epochs", "learning_rate", "batch_size", "max_length", "lora")},
        }
        print(json.dumps(result["train"], indent=2), flush=True)

    label_spec = load_job(
        "jobs/reuters_lora_label.yaml",
        [f"method.model={adapter}", f"input.limit={args.test_rows}", f"output.path={OUT / 'labeled_lora'}"],
    )
    result["lora"] = _metrics(run_job(label_spec, restart=True, progress=True))
    print("lora:", json.dumps(result["lora"]), flush=True)

    if not args.skip_zero_shot:
        if "score" not in METHODS:
            result["zero_shot_score"] = "the score method is not registered in this checkout"
        else:
            for key, calibrate in (("zero_shot_score", False), ("zero_shot_score_calibrated", True)):
                raw = label_spec.model_dump(mode="json", exclude={"method", "train"})
                raw["method"] = {
                    "name": "score", "calibrate": calibrate,
                    "engine": {"name": "hf", "model": str(BASE), "batch_size": 8},
                }
                raw["output"]["path"] = str(OUT / f"labeled_{key}")
                result[key] = _metrics(run_job(parse_job(raw), restart=True, progress=True))
                print(f"{key}:", json.dumps(result[key]), flush=True)
                if not args.calibrated:
                    break

    (OUT / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {OUT / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
