"""The devices tests run on: always the CPU, and a CUDA GPU where the machine has one (CI has none)."""

from __future__ import annotations

import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")

DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
