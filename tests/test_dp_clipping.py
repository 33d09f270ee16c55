"""DP-SGD on LoRA is per pair, exact, and noised as claimed (tiny Llama, DPO, chosen+rejected per record)."""

from __future__ import annotations

import copy

import pytest
import torch

from fedsafe_plugin.demo_data import make_client_pairs
from fedsafe_plugin.privacy.budget import Budget
from fedsafe_plugin.training.data import encode_pairs
from fedsafe_plugin.training.dp import make_private
from fedsafe_plugin.training.dpo import dpo_loss, pair_logps, reference_logps
from fedsafe_plugin.training.lora import add_lora
from fedsafe_plugin.training.tiny import TinySpec, build_tiny_model, build_tiny_tokenizer
from devices import DEVICES

BETA = 0.5
N = 8


def _build(device: str):
    """Tiny Llama + LoRA in float64 (exact comparisons) on `device`, N encoded pairs, reference log-probs."""
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)  # peft draws lora_A from the global RNG
    model = add_lora(build_tiny_model(TinySpec(), tok), r=4).double()
    # Move the adapter off its zero init so both LoRA matrices get non-trivial gradients.
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    model.to(device)
    pairs = encode_pairs(tok, [p.as_record() for p in make_client_pairs(2, 3, N)], 48)
    ref = reference_logps(model, pairs, tok.pad_token_id)
    return model, pairs, ref, tok.pad_token_id


@pytest.fixture(scope="module", params=DEVICES)
def setup(request):
    """The same model and data on each device: on a GPU, Opacus clips and noises there."""
    return _build(request.param)


def _params(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _reference_grads(model, pairs, ref, pad_id):
    """Per-pair gradients one pair at a time with plain autograd on an unhooked copy."""
    model = copy.deepcopy(model)
    out = []
    for i in range(len(pairs)):
        model.zero_grad()
        c, r = pair_logps(model, [pairs[i]], pad_id)
        dpo_loss(c, r, ref[i : i + 1, 0], ref[i : i + 1, 1], BETA).sum().backward()
        out.append(torch.cat([p.grad.flatten() for _, p in _params(model)]))
    return torch.stack(out)


def _private(model, sigma, clip, noise_seed=0, lr=1.0):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(N)), batch_size=N)
    optimizer = torch.optim.SGD([p for _, p in _params(model)], lr=lr)
    budget = Budget(epsilon=10.0, delta=1e-3, max_grad_norm=clip, noise_multiplier=sigma)
    return make_private(model, optimizer, loader, budget, noise_seed=noise_seed, sample_seed=0)


def _dp_backward(dp, pairs, ref, pad_id):
    """One batch of all records through the hooked model (both passes), as training does."""
    idx = list(range(N))
    c, r = pair_logps(dp.model, pairs, pad_id)
    dpo_loss(c, r, ref[idx, 0], ref[idx, 1], BETA).mean().backward()


def test_per_pair_gradients_clipped_and_summed_exactly(setup):
    model, pairs, ref, pad_id = setup
    expected = _reference_grads(model, pairs, ref, pad_id)
    norms = expected.norm(dim=1)
    clip = 0.999 * float(norms.median())  # about half the pairs get clipped
    assert (norms > clip).any() and (norms < clip).any()
    before = torch.cat([p.detach().flatten().clone() for _, p in _params(model)])

    with _private(model, sigma=0.0, clip=clip) as dp:
        _dp_backward(dp, pairs, ref, pad_id)
        per_sample = torch.cat([p.grad_sample.reshape(N, -1) for p in dp.optimizer.params], dim=1)
        # One per-sample gradient per pair (not per sequence), equal to the one-pair-at-a-time loop.
        assert per_sample.shape[0] == N
        # Relative per-pair error; the residual (~5e-6) is `sequence_logps`'s float32 log-softmax.
        assert ((per_sample - expected).norm(dim=1) / expected.norm(dim=1)).max() < 1e-5
        own = (clip / (per_sample.norm(dim=1) + 1e-6)).clamp(max=1.0)  # Opacus's clip factor
        assert ((per_sample * own[:, None]).norm(dim=1) <= clip).all()
        factor = (clip / (norms + 1e-6)).clamp(max=1.0)
        dp.optimizer.step()
        after = torch.cat([p.detach().flatten().clone() for _, p in _params(model)])

    clipped_sum = (expected * factor[:, None]).sum(0)
    # Noise 0, SGD lr 1: the update is exactly minus the clipped sum over the expected batch size.
    update = (before - after) * dp.optimizer.expected_batch_size
    rel = (update - clipped_sum).norm() / clipped_sum.norm()
    assert rel < 1e-5
    with torch.no_grad():  # restore the shared fixture's adapter
        offset = 0
        for _, p in _params(model):
            p.copy_(before[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


def test_noise_std_is_sigma_times_clip(setup):
    model, pairs, ref, pad_id = setup
    sigma, clip = 1.3, 0.05
    expected = _reference_grads(model, pairs, ref, pad_id)
    factor = (clip / (expected.norm(dim=1) + 1e-6)).clamp(max=1.0)
    clipped_sum = (expected * factor[:, None]).sum(0)
    with _private(model, sigma=sigma, clip=clip, noise_seed=1234) as dp:
        _dp_backward(dp, pairs, ref, pad_id)
        dp.optimizer.pre_step()  # clip, noise, scale; no parameter update
        grad = torch.cat([p.grad.flatten() for p in dp.optimizer.params])
        noise = grad * dp.optimizer.expected_batch_size - clipped_sum
        dp.optimizer.zero_grad()
    n = noise.numel()
    assert n > 2000
    std = float(noise.std())
    # Sample std of n Gaussians has relative s.e. ~ 1/sqrt(2n) (~1.5% here); allow 5 s.e.
    assert abs(std - sigma * clip) < 5 * sigma * clip / (2 * n) ** 0.5
    assert abs(float(noise.mean())) < 5 * sigma * clip / n**0.5


def test_hooks_removed_after_close(setup):
    """After a private round the same model trains with plain autograd again (reused next round)."""
    model, pairs, ref, pad_id = setup
    with _private(model, sigma=0.0, clip=1.0, lr=0.0) as dp:
        _dp_backward(dp, pairs, ref, pad_id)
        dp.optimizer.step()
        dp.optimizer.zero_grad()
    model.zero_grad()
    c, r = pair_logps(model, pairs[:2], pad_id)
    dpo_loss(c, r, ref[:2, 0], ref[:2, 1], BETA).mean().backward()
    assert all(p.grad is not None and getattr(p, "grad_sample", None) is None for _, p in _params(model))
