"""Tokenisation shared by training and labeling, so both see exactly the same token ids."""

from __future__ import annotations

MAX_CHARS_PER_TOKEN = 16  # texts are cut at max_length * this many characters before tokenising


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """Token ids cut to ``max_length`` (special tokens kept) and whether each text was truncated."""
    cap = max_length * MAX_CHARS_PER_TOKEN
    clipped = [text[:cap] for text in texts]
    full = tokenizer(clipped, truncation=False, padding=False, verbose=False)["input_ids"]
    ids = tokenizer(clipped, truncation=True, max_length=max_length, padding=False, verbose=False)["input_ids"]
    truncated = [len(f) > max_length or len(t) > cap for f, t in zip(full, texts)]
    return [list(row) for row in ids], truncated


def prepare_tokenizer(tokenizer, padding_side: str):
    """Set the padding side; decoder-only tokenizers without a pad token pad with their EOS token."""
    from batchlabel.errors import BatchlabelError

    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise BatchlabelError("The tokenizer has neither a pad token nor an EOS token to pad with.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
