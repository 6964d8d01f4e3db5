"""Benchmark (not a test): LoRA fine-tune of SmolLM2-135M on ~1,000 R8 rows vs the same model zero-shot.

    batchlabel models import-gguf smollm2-135m        # once: models/smollm2-135m
    python benchmarks/train_lora.py --test-rows 300 --calibrated      # the measured run (~25 min on 2 cores)
    python benchmarks/train_lora.py --smoke --base-model DIR --work-dir W --out-dir W   # CI: 2 steps, 8 rows

1. `batchlabel train jobs/reuters_lora_train.yaml` (LoRA r=16 on q/k/v/o + score head, 3 epochs, 64 tokens),
   timed;
2. label the first ``--test-rows`` rows of R8 test (a fixed sample) with the adapter through `run_job`
   (jobs/reuters_lora_label.yaml, HF engine, merged adapter);
3. label the same rows zero-shot with the `score` method (label log-probabilities, hf engine) on the same
   base model (``--calibrated``: also with contextual calibration);
4. print and write ``--out-dir``/train_lora.json + .md (default benchmarks/results; accuracy, macro-F1,
   training time, rows/s, the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, machine_markdown, md_table, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "out" / "bench_train_lora"
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
    parser.add_argument("--skip-train", action="store_true", help="Reuse the adapter at WORK/adapter.")
    parser.add_argument("--skip-zero-shot", action="store_true", help="Do not run the zero-shot score baseline.")
    parser.add_argument("--calibrated", action="store_true", help="Also run the calibrated zero-shot score baseline.")
    parser.add_argument(
        "--train-set", action="append", default=[], metavar="KEY=VALUE",
        help="Override a field of jobs/reuters_lora_train.yaml (smoke runs: --train-set train.max_steps=2).",
    )
    parser.add_argument("--out-dir", type=Path, help="Where train_lora.json/.md go (default benchmarks/results).")
    parser.add_argument("--work-dir", type=Path, default=WORK, help="Adapter, checkpoints and labeled output.")
    parser.add_argument("--base-model", type=Path, default=BASE, help="HF dir of SmolLM2-135M (import-gguf).")
    parser.add_argument("--smoke", action="store_true", help="2 training steps, 8 test rows (CI); numbers mean nothing.")
    args = parser.parse_args()
    if args.smoke:
        args.test_rows = min(args.test_rows, 8)
        args.train_set = ["train.max_steps=2", "train.eval_fraction=0.05", *args.train_set]
    base_model, out = args.base_model.absolute(), args.work_dir.absolute()
    os.chdir(REPO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not (base_model / "config.json").is_file():
        print(f"{base_model} is missing: run `batchlabel models import-gguf smollm2-135m` first", file=sys.stderr)
        return 2

    from batchlabel.config import load_job, parse_job
    from batchlabel.methods import METHODS
    from batchlabel.run.pipeline import run_job
    from batchlabel.training.base import train_model

    out.mkdir(parents=True, exist_ok=True)
    adapter = out / "adapter"
    base_name = str(base_model.relative_to(REPO)) if base_model.is_relative_to(REPO) else base_model.name
    result: dict = {"machine": machine(), "smoke": args.smoke, "base_model": base_name, "test_rows": args.test_rows}

    train_spec = load_job(
        "jobs/reuters_lora_train.yaml",
        [f"train.output={adapter}", f"train.checkpoint_dir={out / 'checkpoints'}", f"train.base_model={base_model}",
         *args.train_set],
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
        [f"method.model={adapter}", f"input.limit={args.test_rows}", f"output.path={out / 'labeled_lora'}"],
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
                    "engine": {"name": "hf", "model": str(base_model), "batch_size": 8},
                }
                raw["output"]["path"] = str(out / f"labeled_{key}")
                result[key] = _metrics(run_job(parse_job(raw), restart=True, progress=True))
                print(f"{key}:", json.dumps(result[key]), flush=True)
                if not args.calibrated:
                    break

    json_path, md_path = write_results("train_lora_smoke" if args.smoke else "train_lora", result, _markdown(result),
                                       args.out_dir)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    print(f"wrote {json_path} and {md_path}")
    return 0


def _markdown(result: dict) -> str:
    lines = [
        f"# LoRA fine-tune vs zero-shot — {result['base_model']}, first {result['test_rows']} rows of R8 test",
        "",
        machine_markdown(result["machine"]),
        "",
    ]
    if result.get("smoke"):
        lines.insert(2, "**Smoke run (tiny): the numbers mean nothing.**\n")
    train = result.get("train")
    if train:
        hp = train["hyperparameters"]
        lines += [
            f"Training: {train['rows']} rows, {train['steps']} steps, {train['train_wall_s']} s wall "
            f"(epochs {hp['epochs']}, lr {hp['learning_rate']}, batch {hp['batch_size']}, max_length "
            f"{hp['max_length']}, LoRA r={hp['lora']['r']} on {', '.join(hp['lora']['target_modules'])}); "
            f"validation accuracy {train['validation'].get('accuracy', float('nan')):.3f}, "
            f"macro-F1 {train['validation'].get('macro_f1', float('nan')):.3f}.",
            "",
        ]
    rows = []
    for key, name in (
        ("lora", "LoRA classifier (merged, hf engine)"),
        ("zero_shot_score", "zero-shot `score` (label log-probs)"),
        ("zero_shot_score_calibrated", "zero-shot `score`, contextual calibration"),
    ):
        if isinstance(result.get(key), dict):
            m = result[key]
            rows.append([name, m["rows"], f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}", m["errors"], m["rows_per_s"]])
    lines.append(md_table(["labeler", "rows", "accuracy", "macro-F1", "errors", "rows/s (run, Ray start incl.)"], rows))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
