"""GPU benchmark of the `hf` engine's work on Llama-3.2-1B- and Llama-3.1-8B-shaped models.

Throughput depends on the architecture, not on the weights: the models are built on the device with
random bf16 weights from the configs below, and prompts are token ids drawn at random (no tokenizer):
a shared instruction prefix (~150 tokens) + an AG-News-length article (60-120 tokens) + a short
assistant header. For each model, in the same run:

  score        what `batchlabel.engines.hf.HFEngine.score_labels` does: one batched prefill of the
               prompts (logits of the last position only), the KV cache repeated once per label, one pass
               over the label continuations, log-softmax + gather. Articles per batch follow the engine's
               rule min(batch_size, 32 // n_labels) unless --score-batch is given (both are run).
  prompt       what `HFEngine.generate` does: batched left-padded `model.generate`, greedy, a few new
               tokens, with transition scores.
  bare         a plain `model(...)` forward loop over the same prompts and batches (prefill only, logits
               of the last position): the lower bound both methods pay.

Reported: seconds, articles/s, prompt tokens/s, and % of the FLOP ceiling, counting 2 x params FLOPs
per prompt token (attention score FLOPs and the continuation/decoding tokens not counted; H100 bf16
dense = 989 TFLOP/s, --peak-tflops to change).

Needs only torch and transformers (no Ray, vLLM or batchlabel):

    python benchmarks/gpu_hf.py --out results.json                 # on the GPU machine
    python benchmarks/gpu_hf.py --smoke --out /tmp/gpu_smoke.json  # tiny model on CPU (CI)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

MAX_CONTINUATION_ROWS = 32  # batchlabel.engines.hf: bound on (articles x labels) rows per continuation pass

# Llama-3.2-1B and Llama-3.1-8B shapes (from their published config.json). RoPE scaling is left at the
# default: it changes the rotary frequencies, not the amount of work.
MODELS: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                         rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128009),
    "llama-3.1-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                         rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128009),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32, max_position_embeddings=1024, rms_norm_eps=1e-5,
                 tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
}
PAD_ID = 0
LABEL_TOKENS = [2, 2, 2, 3]  # AG News: World, Sports, Business, Sci/Tech (+ end of turn) in Llama-3 tokens


def versions() -> dict[str, Any]:
    import torch

    found = {}
    for name in ("torch", "transformers", "accelerate", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["cuda"] = torch.version.cuda
    found["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    found["python"] = platform.python_version()
    return found


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": device, "host_cpu": platform.processor() or platform.machine()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gib=round(props.total_memory / 1024**3, 1),
                    multiprocessors=props.multi_processor_count, capability=f"{props.major}.{props.minor}")
    return info


def build_model(name: str, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**MODELS[name])
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in bf16 directly (an fp32 8B model would need 32 GB first)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.eval()
    model.generation_config.pad_token_id = PAD_ID
    return model


def make_workload(vocab: int, articles: int, prefix_len: int, article_range: tuple[int, int], header_len: int,
                  seed: int = 0) -> dict[str, Any]:
    """Token-id prompts: shared prefix + article + assistant header; label continuations."""
    import random

    rng = random.Random(seed)
    draw = lambda n: [rng.randrange(10, vocab - 10) for _ in range(n)]  # noqa: E731
    prefix = draw(prefix_len)
    header = draw(header_len)
    prompts = [prefix + draw(rng.randint(*article_range)) + header for _ in range(articles)]
    conts = [draw(n) for n in LABEL_TOKENS]
    return {"prompts": prompts, "continuations": conts, "prefix_tokens": prefix_len}


def left_padded(rows: list[list[int]], device: str):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def score_pass(model, prompts: list[list[int]], conts: list[list[int]], batch: int, device: str):
    """The hf engine's score_labels on token ids (full-label variant)."""
    import numpy as np
    import torch

    n_labels = len(conts)
    width = max(len(c) for c in conts)
    cont_ids = torch.full((n_labels, width), PAD_ID, dtype=torch.long)
    cont_mask = torch.zeros((n_labels, width), dtype=torch.long)
    for j, cont in enumerate(conts):
        cont_ids[j, :len(cont)] = torch.tensor(cont)
        cont_mask[j, :len(cont)] = 1
    cont_ids, cont_mask = cont_ids.to(device), cont_mask.to(device)
    first_index = torch.tensor([c[0] for c in conts], device=device)
    scores = np.zeros((len(prompts), n_labels))
    with torch.inference_mode():
        for start in range(0, len(prompts), batch):
            ids, mask = left_padded(prompts[start:start + batch], device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            result = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
            first_scores = torch.log_softmax(result.logits[:, -1].float(), dim=-1)[:, first_index]
            rows = ids.shape[0]
            cache = result.past_key_values
            cache.batch_repeat_interleave(n_labels)
            lengths = mask.sum(-1)
            step_ids = cont_ids.repeat(rows, 1)
            step_mask = torch.cat([mask.repeat_interleave(n_labels, 0), cont_mask.repeat(rows, 1)], dim=1)
            step_pos = lengths.repeat_interleave(n_labels)[:, None] + torch.arange(width, device=device)[None]
            logits = model(input_ids=step_ids, attention_mask=step_mask, position_ids=step_pos,
                           past_key_values=cache).logits.float()
            norm = torch.logsumexp(logits[:, :-1], dim=-1)
            picked = logits[:, :-1].gather(-1, step_ids[:, 1:, None]).squeeze(-1)
            rest = ((picked - norm) * cont_mask[:, 1:].repeat(rows, 1)).sum(-1).view(rows, n_labels)
            scores[start:start + rows] = (first_scores + rest).cpu().numpy()
    return scores


def prompt_pass(model, prompts: list[list[int]], batch: int, new_tokens: int, device: str) -> int:
    """The hf engine's generate: batched greedy generate with transition scores; returns generated tokens."""
    import torch

    produced = 0
    with torch.inference_mode():
        for start in range(0, len(prompts), batch):
            ids, mask = left_padded(prompts[start:start + batch], device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, return_dict_in_generate=True,
                                 output_scores=True, pad_token_id=PAD_ID, eos_token_id=None)
            model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).float().cpu()
            produced += (out.sequences.shape[1] - ids.shape[1]) * ids.shape[0]
    return produced


def bare_pass(model, prompts: list[list[int]], batch: int, device: str) -> None:
    """A plain forward loop over the same prompts: prefill only, last-position logits."""
    import torch

    with torch.inference_mode():
        for start in range(0, len(prompts), batch):
            ids, mask = left_padded(prompts[start:start + batch], device)
            model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1].float().cpu()


def timed(fn, device: str, repeats: int = 1) -> float:
    """Best wall time of ``repeats`` calls (synchronised)."""
    import torch

    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def bench_model(name: str, args: argparse.Namespace, device: str, dtype) -> dict[str, Any]:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model = build_model(name, device, dtype)
    build_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    work = make_workload(model.config.vocab_size, args.articles, args.prefix_tokens, tuple(args.article_tokens),
                         args.header_tokens)
    prompts = work["prompts"]
    prompt_tokens = sum(len(p) for p in prompts)
    flops_per_token = 2 * params
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    engine_score_batch = max(1, min(args.engine_batch_size, MAX_CONTINUATION_ROWS // len(LABEL_TOKENS)))

    variants: list[tuple[str, int, Any]] = [
        (f"bare_b{engine_score_batch}", engine_score_batch, lambda b: bare_pass(model, prompts, b, device)),
        (f"score_b{engine_score_batch}", engine_score_batch,
         lambda b: score_pass(model, prompts, work["continuations"], b, device)),
    ]
    for b in args.batch_sizes:
        variants.append((f"bare_b{b}", b, lambda b: bare_pass(model, prompts, b, device)))
        if b != engine_score_batch:
            variants.append((f"score_b{b}", b, lambda b: score_pass(model, prompts, work["continuations"], b, device)))
        variants.append((f"prompt_b{b}", b, lambda b: prompt_pass(model, prompts, b, args.new_tokens, device)))
    seen = set()
    results: dict[str, Any] = {}
    for label, batch, fn in variants:
        if label in seen:
            continue
        seen.add(label)
        warm = prompts[:batch]
        # warm-up on one batch (kernels, allocator)
        if label.startswith("score"):
            score_pass(model, warm, work["continuations"], batch, device)
        elif label.startswith("prompt"):
            prompt_pass(model, warm, batch, args.new_tokens, device)
        else:
            bare_pass(model, warm, batch, device)
        seconds = timed(lambda: fn(batch), device, args.repeats)
        tokens_s = prompt_tokens / seconds
        results[label] = {
            "method": label.split("_")[0], "batch": batch, "seconds": seconds,
            "articles_per_s": len(prompts) / seconds, "prompt_tokens_per_s": tokens_s,
            "pct_of_flop_ceiling": 100 * tokens_s * flops_per_token / peak if peak else None,
        }
        print(f"[gpu_hf] {name} {label}: {len(prompts) / seconds:.1f} articles/s, {tokens_s:,.0f} prompt tok/s"
              + (f", {results[label]['pct_of_flop_ceiling']:.1f}% of ceiling" if peak else ""), flush=True)
    for label, row in results.items():
        bare = results.get(f"bare_b{row['batch']}")
        row["time_vs_bare_same_batch"] = row["seconds"] / bare["seconds"] if bare else None
    memory = torch.cuda.max_memory_allocated() / 1024**3 if device.startswith("cuda") else None
    del model
    return {
        "model": name, "config": MODELS[name], "params": params, "params_without_input_embedding": embedding and params - embedding,
        "build_s": build_s, "articles": len(prompts), "prompt_tokens": prompt_tokens,
        "mean_prompt_tokens": prompt_tokens / len(prompts), "shared_prefix_tokens": work["prefix_tokens"],
        "label_continuation_tokens": LABEL_TOKENS, "new_tokens": args.new_tokens,
        "flops_per_prompt_token": flops_per_token, "engine_score_batch": engine_score_batch,
        "peak_gpu_memory_gib": memory, "variants": results,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# hf engine on {result['device'].get('name', result['device']['device'])}: score / prompt vs bare forward",
             "", f"Versions: {result['versions']}", ""]
    if result.get("smoke"):
        lines.append("**Smoke run (tiny model on CPU): the numbers mean nothing.**\n")
    for model in result["models"]:
        lines += [f"## {model['model']} ({model['params'] / 1e9:.2f} B params, {model['mean_prompt_tokens']:.0f} "
                  f"prompt tokens/article, {model['shared_prefix_tokens']} shared)", "",
                  "| variant | batch | articles/s | prompt tok/s | % FLOP ceiling | time vs bare (same batch) |",
                  "|---|---|---|---|---|---|"]
        for label, row in model["variants"].items():
            pct = f"{row['pct_of_flop_ceiling']:.1f}" if row["pct_of_flop_ceiling"] is not None else ""
            lines.append(f"| {label} | {row['batch']} | {row['articles_per_s']:.1f} | {row['prompt_tokens_per_s']:,.0f} "
                         f"| {pct} | {row['time_vs_bare_same_batch']:.2f} |")
        lines.append("")
    lines.append(f"Ceiling: 2 x params FLOPs per prompt token at {result['peak_tflops']} TFLOP/s; engine score batch = "
                 f"min(batch_size 8, {MAX_CONTINUATION_ROWS} // labels).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_hf_results.json"), help="JSON result (and .md next to it).")
    parser.add_argument("--models", default="llama-3.2-1b,llama-3.1-8b", help=f"Comma-separated, of {list(MODELS)}.")
    parser.add_argument("--articles", type=int, default=512, help="Articles (prompts) per variant.")
    parser.add_argument("--prefix-tokens", type=int, default=150, help="Shared instruction prefix length.")
    parser.add_argument("--article-tokens", type=int, nargs=2, default=[60, 120], help="Article length range.")
    parser.add_argument("--header-tokens", type=int, default=5, help="Assistant header after the article.")
    parser.add_argument("--new-tokens", type=int, default=8, help="prompt: new tokens generated per article.")
    parser.add_argument("--engine-batch-size", type=int, default=8, help="The engine's batch_size (spec default 8).")
    parser.add_argument("--batch-sizes", default="8,64", help="Batch sizes for bare/score/prompt variants.")
    parser.add_argument("--repeats", type=int, default=2, help="Timed repeats per variant (best is kept).")
    parser.add_argument("--peak-tflops", type=float, default=None, help="FLOP ceiling; default 989 on CUDA, none on CPU.")
    parser.add_argument("--device", default=None, help="Default: cuda if available, else cpu.")
    parser.add_argument("--smoke", action="store_true", help="Tiny random model on CPU, few prompts (CI).")
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.smoke:
        device = args.device or "cpu"
        args.models, args.articles, args.prefix_tokens = "tiny", 6, 12
        args.article_tokens, args.header_tokens, args.new_tokens, args.repeats = [5, 10], 3, 3, 1
        args.batch_sizes = "4"
    args.batch_sizes = [int(x) for x in str(args.batch_sizes).split(",") if x]
    if args.peak_tflops is None and device.startswith("cuda"):
        args.peak_tflops = 989.0
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    result = {
        "benchmark": "gpu_hf", "smoke": args.smoke, "device": device_info(device), "versions": versions(),
        "dtype": str(dtype).replace("torch.", ""), "peak_tflops": args.peak_tflops,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "models": [bench_model(name, args, device, dtype) for name in args.models.split(",") if name],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result) + "\n")
    print(f"[gpu_hf] wrote {args.out} and {args.out.with_suffix('.md')}", flush=True)
    return result


if __name__ == "__main__":
    main()
