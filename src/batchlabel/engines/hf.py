"""`hf` engine: transformers on CPU/GPU (batched, left padding, `torch.inference_mode`).

Constraints are enforced with xgrammar's transformers logits processor when xgrammar is installed
(it comes with vLLM); without it the answer is generated freely and only validated afterwards.
Label scoring runs the prompt once per article and the label continuations as one batch on top of the
prompt's KV cache (repeated per label).
"""

from __future__ import annotations

import numpy as np

from batchlabel.config import HFEngineSpec
from batchlabel.engines.base import Constraint, Decoding, Generation, Messages, first_token_ids
from batchlabel.engines.local import LocalEngine
from batchlabel.io.storage import StorageSettings

#: most (article, label) rows scored at once on top of a repeated prompt cache (bounds memory)
MAX_CONTINUATION_ROWS = 32


class HFEngine(LocalEngine):
    spec: HFEngineSpec

    def __init__(self, spec: HFEngineSpec, storage: StorageSettings):
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        super().__init__(spec, storage)
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = (
            AutoModelForCausalLM.from_pretrained(self.path, dtype=getattr(torch, spec.dtype)).to(self.device).eval()
        )
        tok = self.chat.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.eos_id = tok.eos_token_id
        self._compiler = self._grammar_compiler()
        self._grammars: dict[Constraint, object] = {}
        self.formats = ("choice", "json") if self._compiler is not None else ("json",)
        self.constrained = self._compiler is not None

    def _grammar_compiler(self):
        try:
            import xgrammar as xgr
        except ImportError:
            return None
        info = xgr.TokenizerInfo.from_huggingface(self.chat.tokenizer, vocab_size=self.model.config.vocab_size)
        return xgr.GrammarCompiler(info)

    def _grammar(self, constraint: Constraint):
        if constraint not in self._grammars:
            if constraint.choice is not None:
                alternatives = " | ".join(_ebnf_string(c) for c in constraint.choice)
                self._grammars[constraint] = self._compiler.compile_grammar(f"root ::= ({alternatives})")
            else:
                self._grammars[constraint] = self._compiler.compile_json_schema(constraint.json_schema, any_whitespace=False)
        return self._grammars[constraint]

    def _left_padded(self, rows: list[list[int]]):
        torch = self.torch
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _generate(self, prompts: list[Messages], constraints: list[Constraint | None], decoding: Decoding) -> list[Generation]:
        results: list[Generation] = []
        size = self.spec.batch_size
        for start in range(0, len(prompts), size):
            results.extend(self._generate_batch(prompts[start : start + size], constraints[start : start + size], decoding))
        return results

    def _generate_batch(self, prompts, constraints, decoding: Decoding) -> list[Generation]:
        torch = self.torch
        rows, out, keep = self.prompt_rows(prompts, decoding.max_tokens)
        if not keep:
            return out
        ids, mask = self._left_padded([rows[i] for i in keep])
        processors = []
        if self._compiler is not None and all(constraints[i] is not None for i in keep):
            import xgrammar as xgr

            processors.append(xgr.contrib.hf.LogitsProcessor([self._grammar(constraints[i]) for i in keep]))
        sampling = {"do_sample": False}
        if decoding.temperature > 0:
            sampling = {"do_sample": True, "temperature": decoding.temperature, "top_k": 0, "top_p": 1.0}
            torch.manual_seed(decoding.seed or 0)
        with torch.inference_mode():
            generated = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=decoding.max_tokens,
                logits_processor=processors or None,
                return_dict_in_generate=True,
                output_scores=True,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_id,
                **sampling,
            )
            steps = self.model.compute_transition_scores(generated.sequences, generated.scores, normalize_logits=True)
        new_tokens = generated.sequences[:, ids.shape[1] :].tolist()
        steps = steps.float().cpu().numpy()
        for position, index in enumerate(keep):
            tokens = new_tokens[position]
            end = tokens.index(self.eos_id) + 1 if self.eos_id in tokens else len(tokens)
            text = self.chat.tokenizer.decode(tokens[: end - 1 if self.eos_id in tokens else end], skip_special_tokens=True)
            logprob = float(np.sum(steps[position, :end])) if processors else None
            out[index] = Generation(text, len(rows[index]), end, logprob=logprob)
        return out

    def score_labels(
        self, prompts: list[Messages], labels: list[str], first_token: bool = False, label_only: bool = False
    ) -> np.ndarray:
        variant = "first_token" if first_token else ("label" if label_only else "full")
        return self.score_variants(prompts, labels, variants=(variant,))[variant]

    def score_variants(
        self, prompts: list[Messages], labels: list[str], variants: tuple[str, ...] = ("full", "label", "first_token")
    ) -> dict[str, np.ndarray]:
        """(n, n_labels) log-probabilities per variant from ONE pass: ``full`` (label + end of turn), ``label``
        (the label's own tokens, ``LocalEngine.label_lengths``) and ``first_token``."""
        torch = self.torch
        first_only = set(variants) == {"first_token"}
        conts = [self.chat.continuation_ids(label) for label in labels]
        firsts = first_token_ids(self.chat, labels) if "first_token" in variants else [c[0] for c in conts]
        own = self.label_lengths(labels) if "label" in variants else [len(c) for c in conts]
        n_labels = len(labels)
        out = {v: np.zeros((len(prompts), n_labels), dtype=np.float64) for v in variants}
        width = max(len(c) for c in conts)
        cont_ids = torch.full((n_labels, width), self.pad_id, dtype=torch.long)
        cont_mask = torch.zeros((n_labels, width), dtype=torch.long)
        for j, cont in enumerate(conts):
            cont_ids[j, : len(cont)] = torch.tensor(cont)
            cont_mask[j, : len(cont)] = 1
        cont_ids, cont_mask = cont_ids.to(self.device), cont_mask.to(self.device)
        first_index = torch.tensor(firsts, device=self.device)
        label_index = torch.tensor([c[0] for c in conts], device=self.device)
        own_mask = (torch.arange(width - 1)[None] < torch.tensor(own)[:, None] - 1).to(self.device)  # (L, C-1)
        # the prompt's KV cache is repeated once per label: bound the rows of the continuation pass
        size = max(1, min(self.spec.batch_size, MAX_CONTINUATION_ROWS // n_labels))
        with torch.inference_mode():
            for start in range(0, len(prompts), size):
                rows = [self.chat.prompt_ids(m) for m in prompts[start : start + size]]
                # tokens run: each prompt once, plus every label's continuation per prompt (full scoring)
                self.usage.add(prompt=sum(map(len, rows)) + (0 if first_only else len(rows) * sum(map(len, conts))))
                ids, mask = self._left_padded(rows)
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                result = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=not first_only, logits_to_keep=1
                )
                last = torch.log_softmax(result.logits[:, -1].float(), dim=-1)  # (B, V)
                batch = len(rows)
                if "first_token" in variants:
                    out["first_token"][start : start + batch] = last[:, first_index].cpu().numpy()
                if first_only:
                    continue
                head = last[:, label_index]  # (B, L): the first answer token of each continuation
                if width == 1:
                    for v in set(variants) - {"first_token"}:
                        out[v][start : start + batch] = head.cpu().numpy()
                    continue
                cache = result.past_key_values
                cache.batch_repeat_interleave(n_labels)
                lengths = mask.sum(-1)  # prompt lengths (B,)
                step_ids = cont_ids.repeat(batch, 1)  # (B*L, C), article-major like the cache
                step_mask = torch.cat([mask.repeat_interleave(n_labels, 0), cont_mask.repeat(batch, 1)], dim=1)
                step_pos = lengths.repeat_interleave(n_labels)[:, None] + torch.arange(width, device=self.device)[None]
                logits = self.model(
                    input_ids=step_ids, attention_mask=step_mask, position_ids=step_pos, past_key_values=cache
                ).logits.float()  # (B*L, C, V): prediction of token j+1 at position j
                norm = torch.logsumexp(logits[:, :-1], dim=-1)  # (B*L, C-1)
                picked = logits[:, :-1].gather(-1, step_ids[:, 1:, None]).squeeze(-1)
                steps = (picked - norm).view(batch, n_labels, width - 1)
                if "full" in variants:
                    rest = (steps * cont_mask[:, 1:][None]).sum(-1)
                    out["full"][start : start + batch] = (head + rest).cpu().numpy()
                if "label" in variants:
                    out["label"][start : start + batch] = (head + (steps * own_mask[None]).sum(-1)).cpu().numpy()
        return out


def _ebnf_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
