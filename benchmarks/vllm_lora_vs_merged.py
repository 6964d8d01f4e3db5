"""Benchmark (not a test): vLLM on CPU, one LoRA adapter served with LoRARequest vs merged into the weights.

    LD_PRELOAD=$PWD/.venv/lib/libiomp5.so python benchmarks/vllm_lora_vs_merged.py out/bench_vllm_lora [N] [merged-first]

A rank-16 adapter on q/k/v/o of SmolLM2-135M (models/smollm2-135m) with random non-zero weights (speed does
not depend on training) is saved both as a peft adapter and merged; each variant generates 4 greedy tokens
for the same N chat prompts (first N R8 test articles, 128 tokens each) in-process (enforce_eager, fp32,
prefix caching). Prints load time, wall time, prompts/s and how many outputs are identical.
Measured 2026-11-25 on the shared 2-core CPU box (load average 4-8), N=64: merged 2.75 / 2.86 prompts/s,
LoRARequest 0.37 / 0.44 prompts/s (both orders), 64/64 identical outputs -> merge single-adapter jobs on CPU.
"""
import gc, json, os, sys, time
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from pathlib import Path
REPO = Path(__file__).resolve().parents[1]; BASE = REPO / "models" / "smollm2-135m"
out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/bench_vllm_lora"); out.mkdir(parents=True, exist_ok=True); n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
adapter, merged = out / "adapter", out / "merged"
if not (merged / "config.json").is_file():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    cfg = LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
    model = get_peft_model(model, cfg)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.002)
    model.save_pretrained(adapter)
    model.merge_and_unload().save_pretrained(merged)
    AutoTokenizer.from_pretrained(BASE).save_pretrained(merged)
import pyarrow.parquet as pq
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(BASE)
texts = pq.read_table(REPO / "data/reuters_r8/test.parquet").column("text").to_pylist()[:n]
prompts = [tok.apply_chat_template([{"role": "system", "content": "Classify the news article into one of: earn, acq, crude, trade, money-fx, interest, ship, grain. Answer with the label only."},
                                    {"role": "user", "content": "Text: " + tok.decode(tok(t)["input_ids"][:128])}], tokenize=False, add_generation_prompt=True) for t in texts]
import vllm
from vllm.lora.request import LoRARequest
sp = vllm.SamplingParams(max_tokens=4, temperature=0.0)
common = dict(dtype="float32", max_model_len=512, enforce_eager=True, seed=0, enable_prefix_caching=True)
result = {"prompts": n, "max_tokens": 4}
outputs = {}
modes = ("merged", "lora_request") if len(sys.argv) > 3 and sys.argv[3] == "merged-first" else ("lora_request", "merged")
for mode in modes:
    t0 = time.time()
    if mode == "lora_request":
        llm = vllm.LLM(model=str(BASE), enable_lora=True, max_lora_rank=16, max_loras=1, **common)
        kw = {"lora_request": LoRARequest("a", 1, str(adapter))}
    else:
        llm = vllm.LLM(model=str(merged), **common)
        kw = {}
    load = time.time() - t0
    llm.generate(prompts[:4], sp, use_tqdm=False, **kw)  # warm-up
    t0 = time.time()
    res = llm.generate(prompts, sp, use_tqdm=False, **kw)
    wall = time.time() - t0
    outputs[mode] = [r.outputs[0].text for r in res]
    result[mode] = {"load_s": round(load, 1), "wall_s": round(wall, 2), "prompts_per_s": round(n / wall, 2)}
    print(mode, result[mode], flush=True)
    del llm; gc.collect()
result["same_outputs"] = sum(a == b for a, b in zip(outputs["lora_request"], outputs["merged"]))
print(json.dumps(result, indent=2))
(out / "vllm_lora_speed.json").write_text(json.dumps(result, indent=2))
