"""On-device sanitization (FedDetox): a distilled student safety classifier and pair rewriting.

`Sanitizer.from_config(cfg).sanitize(records)` is all a client needs. Torch-backed names
(`SafetyClassifier`, `distill`, teachers) load on first use so `fedsafe --help` stays instant.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from fedsafe_plugin.sanitize.refusals import REFUSALS, choose_refusal
from fedsafe_plugin.sanitize.sanitizer import SanitizeResult, Sanitizer, fingerprint

_LAZY = {
    "SafetyClassifier": "fedsafe_plugin.sanitize.classifier",
    "StudentConfig": "fedsafe_plugin.sanitize.classifier",
    "EncoderSpec": "fedsafe_plugin.sanitize.encoder",
    "DistillSettings": "fedsafe_plugin.sanitize.distill",
    "distill": "fedsafe_plugin.sanitize.distill",
    "calibrate_threshold": "fedsafe_plugin.sanitize.distill",
    "SequenceClassifierTeacher": "fedsafe_plugin.sanitize.teachers",
    "GuardTeacher": "fedsafe_plugin.sanitize.teachers",
    "labels_from_column": "fedsafe_plugin.sanitize.teachers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["REFUSALS", "SanitizeResult", "Sanitizer", "choose_refusal", "fingerprint", *_LAZY]
