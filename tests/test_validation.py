"""Update checks shared by the server wrappers and the client mod."""

import numpy as np
import pytest

from fedsafe_plugin.validation import clip_update, find_problem, update_norm

REF = {"a": np.zeros((2, 3), np.float32), "b": np.ones(4, np.float32)}


def test_good_update_passes():
    upd = {"a": np.full((2, 3), 0.1, np.float32), "b": np.ones(4, np.float32)}
    assert find_problem(upd, REF) is None
    assert update_norm(upd, REF) == pytest.approx(np.sqrt(6 * 0.01), rel=1e-5)


@pytest.mark.parametrize(
    ("update", "needle"),
    [
        ({"a": np.zeros((2, 3), np.float32)}, "keys differ"),
        ({**REF, "c": np.zeros(1)}, "keys differ"),
        ({"a": np.zeros((3, 2), np.float32), "b": REF["b"]}, "shape (3, 2), expected (2, 3)"),
        ({"a": np.array([[np.nan, 0, 0], [0, 0, 0]], np.float32), "b": REF["b"]}, "NaN or inf"),
        ({"a": np.full((2, 3), np.inf, np.float32), "b": REF["b"]}, "NaN or inf"),
        ({"a": np.array([["x"] * 3] * 2), "b": REF["b"]}, "non-numeric"),
    ],
)
def test_bad_updates_have_reasons(update, needle):
    assert needle in find_problem(update, REF)


def test_norm_bound_and_clipping():
    upd = {"a": np.full((2, 3), 1.0, np.float32), "b": np.ones(4, np.float32)}
    assert "exceeds the bound" in find_problem(upd, REF, max_norm=1.0)
    clipped = clip_update(upd, REF, 1.0)
    assert update_norm(clipped, REF) == pytest.approx(1.0, rel=1e-5)
    assert find_problem(clipped, REF, max_norm=1.0) is None
    small = {"a": np.full((2, 3), 0.01, np.float32), "b": np.ones(4, np.float32)}
    assert np.array_equal(clip_update(small, REF, 1.0)["a"], small["a"])


def test_a_bound_below_float32_precision_is_an_error_not_a_silent_overshoot():
    rng = np.random.default_rng(10)  # a case where float32 rounding keeps the norm just over the bound
    ref = {"a": rng.uniform(0.5, 1.0, 4302).astype(np.float32)}
    upd = {"a": ref["a"] + rng.normal(scale=0.01, size=4302).astype(np.float32)}
    with pytest.raises(ValueError, match="cannot bound the update to norm 6.7e-06"):
        clip_update(upd, ref, 6.7e-6)


def test_clipped_updates_pass_the_same_bound_on_the_server():
    """Clipped to exactly the bound, float32 rounding would put about half just over it."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        ref = {"A": rng.normal(size=(8, 4096)).astype(np.float32)}
        upd = {"A": ref["A"] + rng.normal(scale=0.05, size=(8, 4096)).astype(np.float32)}
        clipped = clip_update(upd, ref, 0.5)
        assert find_problem(clipped, ref, max_norm=0.5) is None
        assert update_norm(clipped, ref) == pytest.approx(0.5, rel=1e-5)
