"""Only LoRA adapter weights cross the wire, in both directions, with clear mismatch errors."""

import numpy as np
import pytest

from fedsafe_plugin import add_lora, build_tiny_model, build_tiny_tokenizer, get_adapter_arrays, set_adapter_arrays
from fedsafe_plugin.training.lora import AdapterMismatchError, get_adapter_ndarrays, set_adapter_ndarrays
from fedsafe_plugin.validation import to_array_record


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def _model(tokenizer, r=8):
    return add_lora(build_tiny_model(tokenizer=tokenizer), r=r)


def test_only_adapter_weights_travel(tokenizer):
    model = _model(tokenizer)
    arrays = get_adapter_arrays(model)
    assert arrays and all("lora_" in k for k in arrays)
    n_sent = sum(a.numpy().size for a in arrays.values())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    assert n_sent == n_trainable < n_total / 10


def test_round_trip_sets_weights(tokenizer):
    src, dst = _model(tokenizer), _model(tokenizer)
    arrays = get_adapter_arrays(src)
    perturbed = {k: v.numpy() + 0.5 for k, v in arrays.items()}
    set_adapter_arrays(dst, to_array_record(perturbed))
    back = get_adapter_arrays(dst)
    for k in perturbed:
        np.testing.assert_allclose(back[k].numpy(), perturbed[k])
    set_adapter_ndarrays(src, get_adapter_ndarrays(dst))
    for k in perturbed:
        np.testing.assert_allclose(get_adapter_arrays(src)[k].numpy(), perturbed[k])


def test_mismatch_is_a_clear_error(tokenizer):
    small, big = _model(tokenizer, r=4), _model(tokenizer, r=8)
    with pytest.raises(AdapterMismatchError, match="has shape"):
        set_adapter_arrays(big, get_adapter_arrays(small))
    arrays = get_adapter_arrays(big)
    partial = to_array_record({k: v.numpy() for k, v in list(arrays.items())[1:]})
    with pytest.raises(AdapterMismatchError, match="adapter keys differ"):
        set_adapter_arrays(big, partial)
    with pytest.raises(AdapterMismatchError, match="expected 16 adapter arrays, got 15"):
        set_adapter_ndarrays(big, get_adapter_ndarrays(big)[1:])


def test_tiny_model_is_deterministic(tokenizer):
    a, b = build_tiny_model(tokenizer=tokenizer), build_tiny_model(tokenizer=build_tiny_tokenizer())
    assert all(np.array_equal(p.detach().numpy(), q.detach().numpy()) for p, q in zip(a.parameters(), b.parameters()))
