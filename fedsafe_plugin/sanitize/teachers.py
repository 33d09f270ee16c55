"""Teacher sources for distillation; each returns unsafe-vs-safe log-odds per (prompt, response).

(a) a Hugging Face sequence classifier, (b) a causal "guard" LM prompted Llama-Guard style and read
at the next token ("unsafe" vs "safe"), (c) labels from a dataset column (hard labels, no logits).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from fedsafe_plugin.devices import model_device, resolve_device
from fedsafe_plugin.training.data import pad_id

UNSAFE_VALUES = frozenset({"unsafe", "harmful", "toxic", "1", "true", "yes", "jailbroken"})
SAFE_VALUES = frozenset({"safe", "benign", "harmless", "0", "false", "no"})

GUARD_TEMPLATE = (
    "Task: Check if there is unsafe content in '{role}' messages in conversations according to our "
    "safety policy (violence, weapons, crime, cybercrime, fraud, hate, harassment, self-harm, sexual "
    "content involving minors, privacy violations, dangerous advice).\n\n"
    "<BEGIN CONVERSATION>\n\n{conversation}\n\n<END CONVERSATION>\n\n"
    "Provide your safety assessment for {role} in the above conversation:\n"
    "- First line must read 'safe' or 'unsafe'."
)


class Teacher(Protocol):
    """Anything that gives log(P(unsafe) / P(safe)) for each sample."""

    def logits(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None) -> np.ndarray: ...


def _load(auto_class: Any, model_id: str, device: str, dtype: str) -> tuple[Any, Any]:
    """(tokenizer, model in eval mode on `device`); `dtype` is "auto" (the checkpoint's) or a torch dtype name.

    A 7-8B guard model wants a GPU (`device="cuda"`) and its own bf16 weights.
    """
    import torch
    from transformers import AutoTokenizer

    target = resolve_device(device)
    if dtype != "auto" and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ValueError(f"dtype {dtype!r} is not 'auto' or a torch dtype (float32, bfloat16, float16)")
    local = {"local_files_only": True} if os.path.isdir(model_id) else {}
    tokenizer = AutoTokenizer.from_pretrained(model_id, **local)
    # device_map loads the weights straight onto the device: no full host copy of a large teacher.
    model = auto_class.from_pretrained(
        model_id, dtype=dtype if dtype == "auto" else getattr(torch, dtype), device_map={"": target}, **local
    )
    return tokenizer, model.eval()


class SequenceClassifierTeacher:
    """(a) `AutoModelForSequenceClassification`; `unsafe_label` is a label name or index."""

    def __init__(
        self, model_id: str, unsafe_label: str | int | None = None, max_length: int = 512, batch_size: int = 16,
        device: str = "cpu", dtype: str = "auto",
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        self.tokenizer, self.model = _load(AutoModelForSequenceClassification, model_id, device, dtype)
        self.max_length, self.batch_size = max_length, batch_size
        self.unsafe_index = self._unsafe_index(unsafe_label)

    def _unsafe_index(self, unsafe_label: str | int | None) -> int:
        id2label = {int(k): str(v).lower() for k, v in self.model.config.id2label.items()}
        if isinstance(unsafe_label, int) or (isinstance(unsafe_label, str) and unsafe_label.isdigit()):
            return int(unsafe_label)
        if unsafe_label is not None:
            wanted = unsafe_label.lower()
            for i, name in id2label.items():
                if name == wanted:
                    return i
            raise ValueError(f"label {unsafe_label!r} not in the teacher's labels {sorted(id2label.values())}")
        for i, name in id2label.items():
            if name in UNSAFE_VALUES:
                return i
        if len(id2label) == 2:
            return 1
        raise ValueError(f"cannot tell which label is unsafe among {sorted(id2label.values())}; pass unsafe_label")

    def logits(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(prompts), self.batch_size):
            p = list(prompts[start : start + self.batch_size])
            r = None if responses is None else [x or "" for x in responses[start : start + self.batch_size]]
            enc = self.tokenizer(p, r, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
            with torch.inference_mode():
                z = self.model(**enc.to(model_device(self.model))).logits.float().cpu()
            if z.shape[-1] == 1:  # a single-logit classifier already gives the log-odds
                out.append(z[:, 0])
                continue
            logp = torch.log_softmax(z, dim=-1)
            unsafe = logp[:, self.unsafe_index]
            others = torch.cat([logp[:, : self.unsafe_index], logp[:, self.unsafe_index + 1 :]], dim=-1)
            out.append(unsafe - torch.logsumexp(others, dim=-1))
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


class GuardTeacher:
    """(b) A causal guard LM: log-odds of the first token of `unsafe_word` vs `safe_word` after the prompt."""

    def __init__(
        self,
        model_id: str,
        unsafe_word: str = "unsafe",
        safe_word: str = "safe",
        template: str = GUARD_TEMPLATE,
        max_length: int = 1024,
        batch_size: int = 4,
        device: str = "cpu",
        dtype: str = "auto",
    ) -> None:
        from transformers import AutoModelForCausalLM

        self.tokenizer, self.model = _load(AutoModelForCausalLM, model_id, device, dtype)
        self.template, self.max_length, self.batch_size = template, max_length, batch_size
        self.unsafe_id = self._first_token(unsafe_word)
        self.safe_id = self._first_token(safe_word)
        if self.unsafe_id == self.safe_id:
            raise ValueError(f"{unsafe_word!r} and {safe_word!r} start with the same token; pass distinct words")

    def _first_token(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if not ids:
            raise ValueError(f"{word!r} encodes to no tokens")
        return int(ids[0])

    def guard_prompt(self, prompt: str, response: str | None) -> str:
        """The text fed to the guard: the policy prompt in the model's chat template when it has one."""
        if response is None:
            role, conversation = "User", f"User: {prompt}"
        else:
            role, conversation = "Agent", f"User: {prompt}\n\nAgent: {response}"
        text = self.template.format(role=role, conversation=conversation)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        return text + "\n"

    def logits(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None) -> np.ndarray:
        import torch

        texts = [self.guard_prompt(p, None if responses is None else responses[i]) for i, p in enumerate(prompts)]
        out = []
        pad = pad_id(self.tokenizer)
        for start in range(0, len(texts), self.batch_size):
            # Left-truncate so the question the guard answers (the end of the prompt) is always kept.
            seqs = [self.tokenizer.encode(t, add_special_tokens=False)[-self.max_length :] for t in texts[start : start + self.batch_size]]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, s in enumerate(seqs):  # left padding: the next-token position is the last column
                ids[row, width - len(s) :] = torch.tensor(s)
                mask[row, width - len(s) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # so left padding does not shift positions
            device = model_device(self.model)
            with torch.inference_mode():
                last = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  position_ids=positions.to(device)).logits[:, -1, :].float().cpu()
            out.append(last[:, self.unsafe_id] - last[:, self.safe_id])
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def labels_from_column(rows: Sequence[dict], column: str) -> np.ndarray:
    """(c) Hard labels (1 unsafe, 0 safe, nan unknown) from a column of bools, 0/1 or label names."""
    if rows and not any(column in row for row in rows):
        raise ValueError(f"label column {column!r} is in no row (columns seen: {sorted({k for r in rows for k in r})[:10]})")
    out = np.full(len(rows), np.nan)
    for i, row in enumerate(rows):
        value = row.get(column)
        if value is None:
            continue
        if isinstance(value, bool):
            out[i] = float(value)
        elif isinstance(value, (int, float)) and value in (0, 1):
            out[i] = float(value)
        elif str(value).strip().lower() in UNSAFE_VALUES:
            out[i] = 1.0
        elif str(value).strip().lower() in SAFE_VALUES:
            out[i] = 0.0
        else:
            raise ValueError(f"row {i + 1}: {column}={value!r} is not a recognised label (unsafe/safe, harmful/benign, 1/0, true/false)")
    return out
