"""`batchlabel train`: one trainer per train.method, chosen in ``training.base`` (head | lora | full | instruct).

``base`` holds the registry and dispatch; ``data`` the gold rows and their id-hash validation split;
``head`` the linear head on embeddings; ``hf_trainer`` the HF-Trainer plumbing that ``seqcls`` (sequence
classifier, lora | full) and ``instruct`` (causal-LM LoRA for the score method) share; ``distributed``
runs a fine-tune on Ray Train workers.
"""
