"""The student safety classifier: a frozen encoder plus a small head giving P(unsafe).

A student folder holds `student.json` (backbone, max length, layers kept, thresholds) and
`head.safetensors` (head weights only, never the backbone), so the shipped one is a few hundred KB.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedsafe_plugin.sanitize.encoder import SCORE_BATCH, Encoder, EncoderSpec

SHIPPED_STUDENT = Path(__file__).resolve().parent / "student"
CONFIG_NAME = "student.json"
HEAD_NAME = "head.safetensors"


def student_config_file(path: str | Path | None = None) -> Path:
    """The student.json of a student folder (None or '' = the shipped one); a clear error if absent."""
    folder = Path(path) if path else SHIPPED_STUDENT
    cfg_file = folder / CONFIG_NAME
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{folder} is not a student folder: {CONFIG_NAME} is missing")
    return cfg_file


def student_files(path: str | Path | None = None) -> list[Path]:
    """The files that define a student (student.json, head.safetensors): what a cache key must hash."""
    cfg_file = student_config_file(path)
    return [cfg_file, cfg_file.parent / HEAD_NAME]


class Head(nn.Module):
    """MLP (or logistic regression when hidden=0) from a pooled embedding to one unsafe logit."""

    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden:
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        else:
            self.net = nn.Sequential(nn.Linear(dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@dataclass
class StudentConfig:
    """Everything needed to rebuild a student; written as student.json."""

    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    hidden: int = 256
    threshold: float = 0.5  # for (prompt, response) pairs
    prompt_threshold: float = 0.5  # for prompt-only screening
    notes: dict = field(default_factory=dict)  # provenance: data files, metrics, command

    @classmethod
    def from_dict(cls, d: dict) -> StudentConfig:
        d = dict(d)
        d["encoder"] = EncoderSpec(**d.get("encoder", {}))
        return cls(**d)


class SafetyClassifier:
    """Scores (prompt, response) pairs or bare prompts with P(unsafe)."""

    def __init__(self, config: StudentConfig, encoder: Encoder | None = None, head: Head | None = None) -> None:
        self.config = config
        self.encoder = encoder if encoder is not None else Encoder(config.encoder)
        self.head = head if head is not None else Head(self.encoder.dim, config.hidden)
        self.head.eval()

    @property
    def threshold(self) -> float:
        """Calibrated threshold for pairs (chosen on validation data for recall >= 0.95)."""
        return self.config.threshold

    @property
    def prompt_threshold(self) -> float:
        """Calibrated threshold for prompt-only screening."""
        return self.config.prompt_threshold

    @classmethod
    def load(cls, path: str | Path | None = None, *, quantize: bool | None = None) -> SafetyClassifier:
        """Load a student folder (None or '' = the shipped student); `quantize` overrides its setting."""
        cfg_file = student_config_file(path)
        folder = cfg_file.parent
        config = StudentConfig.from_dict(json.loads(cfg_file.read_text()))
        if quantize is not None:
            config.encoder = EncoderSpec(**{**asdict(config.encoder), "quantize": quantize})
        from safetensors.torch import load_file

        encoder = Encoder(config.encoder)
        head = Head(encoder.dim, config.hidden)
        head.load_state_dict(load_file(str(folder / HEAD_NAME)))
        return cls(config, encoder, head)

    def save(self, path: str | Path) -> Path:
        """Write student.json and head.safetensors (no backbone weights) into `path`."""
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()}, str(folder / HEAD_NAME))
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2, sort_keys=True) + "\n")
        return folder

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str | None] | None = None,
        batch_size: int = SCORE_BATCH,
    ) -> np.ndarray:
        """P(unsafe) per sample; a None response (or responses=None) means prompt-only mode."""
        return self.score_embeddings(self.encoder.embed(prompts, responses, batch_size=batch_size))

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """P(unsafe) from precomputed encoder embeddings (used by distillation and calibration)."""
        with torch.inference_mode():
            logits = self.head(torch.from_numpy(np.asarray(embeddings, dtype=np.float32)))
        return torch.sigmoid(logits).numpy().astype(np.float64)
