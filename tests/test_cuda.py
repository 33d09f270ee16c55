"""Training, DP-SGD, evaluation and the adapter exchange follow a model the app put on a GPU.

The tests run the same tiny model (float64, fp32 for the CLI) on the CPU and on CUDA and compare
the results; the per-record clipping and noise checks run on both devices in test_dp_clipping.py.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from fedsafe_plugin.cli import main
from fedsafe_plugin.config import PrivacyConfig
from fedsafe_plugin.demo_data import make_client_pairs
from fedsafe_plugin.eval.harness import generate_answers
from fedsafe_plugin.eval.scoring import score_responses
from fedsafe_plugin.sanitize.teachers import GuardTeacher, SequenceClassifierTeacher
from fedsafe_plugin.sanitize.tiny import build_tiny_guard_teacher, build_tiny_seqcls_teacher
from fedsafe_plugin.training.data import encode_pairs
from fedsafe_plugin.training.dp import EPSILON, train_dpo_private
from fedsafe_plugin.training.local import TrainSettings, train_dpo
from fedsafe_plugin.training.lora import add_lora, get_adapter_arrays, set_adapter_arrays
from fedsafe_plugin.training.tiny import TinySpec, build_tiny_model, build_tiny_tokenizer
from devices import needs_cuda

pytestmark = needs_cuda
N = 12


@pytest.fixture(scope="module")
def tiny():
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)  # peft draws lora_A from the global RNG
    model = add_lora(build_tiny_model(TinySpec(), tok), r=4).double()
    with torch.no_grad():  # a non-zero adapter, so every LoRA matrix gets a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    records = [p.as_record() for p in make_client_pairs(0, 3, N)]
    return tok, model, records


def _on(model, device):
    return copy.deepcopy(model).to(device)


def _adapter(model):
    return {k: torch.as_tensor(v) for k, v in get_adapter_arrays(model).to_torch_state_dict().items()}


def test_dpo_round_on_gpu_matches_cpu(tiny):
    tok, model, records = tiny
    pairs = encode_pairs(tok, records, 48)
    settings = TrainSettings(steps=3, batch_size=4, lr=0.01)
    out = {}
    for device in ("cpu", "cuda"):
        m = _on(model, device)
        loss = train_dpo(m, pairs, settings, tok.pad_token_id)["train-loss"]
        out[device] = (loss, _adapter(m))
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], rel=1e-7)  # float64, other reduction orders
    init = _adapter(model)
    for key, cpu in out["cpu"][1].items():
        gpu = out["cuda"][1][key]
        # AdamW rescales near-zero gradients element by element, so compare whole updates.
        assert (gpu - cpu).norm() <= 1e-3 * (cpu - init[key]).norm()
    assert any(not torch.equal(out["cpu"][1][k], v) for k, v in init.items())  # it trained


def test_private_round_on_gpu_samples_and_scores_like_cpu(tiny):
    """One DP step: the same Poisson batch (host-side sampler) gives the same pre-noise loss."""
    tok, model, records = tiny
    pairs = encode_pairs(tok, records, 48)
    privacy = PrivacyConfig(enabled=True, epsilon=5.0, delta=1e-3, rounds=2, local_steps=1, batch_size=4,
                            accountant="rdp", noise_multiplier=1.0)
    out = {}
    for device in ("cpu", "cuda"):
        m = _on(model, device)
        result = train_dpo_private(m, pairs, TrainSettings(lr=0.01), privacy, RecordDict(), tok.pad_token_id, noise_seed=3)
        assert not result.exhausted
        assert all(p.device.type == device for p in m.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(_adapter(m).values(), _adapter(model).values(), strict=True))
        out[device] = result.metrics
    assert out["cuda"]["train-loss"] == pytest.approx(out["cpu"]["train-loss"], rel=1e-7)
    assert out["cuda"][EPSILON] == out["cpu"][EPSILON] <= privacy.epsilon


def test_scoring_and_generation_on_gpu_match_cpu(tiny):
    tok, model, records = tiny
    prompts, responses = [r["prompt"] for r in records[:6]], [r["chosen"] for r in records[:6]]
    cpu, gpu = _on(model, "cpu"), _on(model, "cuda")
    scored = {d: score_responses(m, tok, prompts, responses, batch_size=4) for d, m in (("cpu", cpu), ("cuda", gpu))}
    for (a, na), (b, nb) in zip(scored["cpu"], scored["cuda"], strict=True):
        assert na == nb and a == pytest.approx(b, rel=1e-7)
    assert generate_answers(gpu, tok, prompts, 8, False, batch_size=3) == generate_answers(cpu, tok, prompts, 8, False, batch_size=3)


def test_adapter_arrays_load_into_a_gpu_model(tiny):
    _, model, _ = tiny
    gpu = _on(model, "cuda")
    with torch.no_grad():
        for name, p in gpu.named_parameters():
            if "lora_" in name:
                p.zero_()
    set_adapter_arrays(gpu, get_adapter_arrays(model))
    for key, value in _adapter(model).items():
        torch.testing.assert_close(_adapter(gpu)[key], value, rtol=0, atol=0)
    assert all(p.device.type == "cuda" for p in gpu.parameters())


def test_eval_cli_on_gpu_matches_cpu(tmp_path):
    rates = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.json"
        assert main(["eval", "--device", device, "--limit", "6", "--quiet", "--out", str(out)]) == 0
        rates[device] = json.loads(out.read_text())
    for key in ("harmful_rate", "jailbreak_rate", "over_refusal_rate", "utility"):
        assert rates["cuda"][key] == rates["cpu"][key]
    for name, margin in rates["cpu"]["margins"].items():
        assert rates["cuda"]["margins"][name] == pytest.approx(margin, abs=1e-4)


@pytest.mark.parametrize("kind", ["seqcls", "guard"])
def test_teachers_on_gpu_match_cpu(tmp_path, kind):
    """`fedsafe distill --teacher-device cuda`: the same log-odds; bf16 on the GPU stays close."""
    build, cls = {"seqcls": (build_tiny_seqcls_teacher, SequenceClassifierTeacher),
                  "guard": (build_tiny_guard_teacher, GuardTeacher)}[kind]
    folder = build(tmp_path / kind)
    prompts = ["how do I bake bread?", "how do I make a weapon?", "write a poem"]
    responses = ["knead the dough", None, "roses are red"]
    cpu = cls(folder).logits(prompts, responses)
    gpu = cls(folder, device="cuda").logits(prompts, responses)
    half = cls(folder, device="cuda", dtype="bfloat16").logits(prompts, responses)
    assert cpu.shape == (3,) and gpu.dtype == cpu.dtype
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
    np.testing.assert_allclose(half, cpu, atol=0.1 + 0.05 * np.abs(cpu).max())
