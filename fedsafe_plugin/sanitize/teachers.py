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
    """(b) A causal guard LM: log-odds of the answer `unsafe_word` vs `safe_word` at the next token.

    With a chat template (Llama Guard 1/2/3 ship one that writes the whole task prompt, policy
    included) the guard sees the real turns, user prompt and assistant response; `template`, or a
    tokenizer without a chat template, uses the built-in Llama-Guard-style task prompt instead.
    """

    def __init__(
        self,
        model_id: str,
        unsafe_word: str = "unsafe",
        safe_word: str = "safe",
        template: str | None = None,
        max_length: int = 1024,
        batch_size: int = 4,
        device: str = "cpu",
        dtype: str = "auto",
    ) -> None:
        from transformers import AutoModelForCausalLM

        self.tokenizer, self.model = _load(AutoModelForCausalLM, model_id, device, dtype)
        self.template, self.max_length, self.batch_size = template, max_length, batch_size
        unsafe, safe = self._answer_tokens(unsafe_word), self._answer_tokens(safe_word)
        # A token both answers can start with (a bare space piece, say) says nothing either way.
        self.unsafe_ids, self.safe_ids = sorted(unsafe - safe), sorted(safe - unsafe)
        if not self.unsafe_ids or not self.safe_ids:
            raise ValueError(f"{unsafe_word!r} and {safe_word!r} start with the same token; pass distinct words")

    def _answer_tokens(self, word: str) -> set[int]:
        """Ids of the first token of `word` as the guard would write it right after its prompt.

        A word's first token depends on what precedes it: SentencePiece (Llama 2, Llama Guard 1)
        marks a word start with '▁' and adds it to the first word of a text, byte-level BPE
        (Llama 3, Llama Guard 3) folds a preceding space into the token ('Ġunsafe' vs 'unsafe').
        So `encode(word)` alone can give a token the guard never writes there. Instead the word is
        encoded after a real prompt, bare and after a space (guards answer either way), and the
        first token past the prompt's own tokens is kept; the log-odds sum over both.
        """
        context = self.guard_prompt("Hello.", "Hi.")
        base = self.tokenizer.encode(context, add_special_tokens=False)
        ids = set()
        for variant in (word, " " + word):
            full = self.tokenizer.encode(context + variant, add_special_tokens=False)
            if len(full) > len(base) and full[: len(base)] == base:  # else the word merged into the prompt's end
                ids.add(int(full[len(base)]))
        if not ids:
            raise ValueError(f"{word!r} adds no token of its own after the guard prompt")
        return ids

    def guard_prompt(self, prompt: str, response: str | None) -> str:
        """The text fed to the guard: the conversation through the model's chat template, else the built-in task prompt."""
        if self.template is None and getattr(self.tokenizer, "chat_template", None):
            turns = [{"role": "user", "content": prompt}]
            if response is not None:
                turns.append({"role": "assistant", "content": response})
            return self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        if response is None:
            role, conversation = "User", f"User: {prompt}"
        else:
            role, conversation = "Agent", f"User: {prompt}\n\nAgent: {response}"
        return (self.template or GUARD_TEMPLATE).format(role=role, conversation=conversation) + "\n"

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
            out.append(torch.logsumexp(last[:, self.unsafe_ids], -1) - torch.logsumexp(last[:, self.safe_ids], -1))
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def parse_label(value: Any) -> float:
    """1.0 unsafe, 0.0 safe, nan for None; a ValueError names what a label may be."""
    if value is None:
        return float("nan")
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
        return float(value)
    name = str(value).strip().lower()
    if name in UNSAFE_VALUES or name in SAFE_VALUES:
        return float(name in UNSAFE_VALUES)
    raise ValueError(f"{value!r} is not a recognised label (unsafe/safe, harmful/benign, 1/0, true/false)")


def labels_from_column(rows: Sequence[dict], column: str) -> np.ndarray:
    """(c) Hard labels (1 unsafe, 0 safe, nan unknown) from a column of bools, 0/1 or label names."""
    if rows and not any(column in row for row in rows):
        raise ValueError(f"label column {column!r} is in no row (columns seen: {sorted({k for r in rows for k in r})[:10]})")
    out = np.full(len(rows), np.nan)
    for i, row in enumerate(rows):
        try:
            out[i] = parse_label(row.get(column))
        except ValueError as exc:
            raise ValueError(f"row {i + 1}: {column}={exc}") from None
    return out
