"""Batching of encoded pairs: the pad id, and a clear error when a tokenizer has none."""

from types import SimpleNamespace

import pytest

from fedsafe_plugin.training.data import collate, pad_id


def test_pad_id_falls_back_to_eos():
    assert pad_id(SimpleNamespace(pad_token_id=3, eos_token_id=2)) == 3
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=2)) == 2


def test_collate_pads_and_masks_the_response():
    ids, mask = collate([[5, 6], [7]], [[8], [9, 10]], pad_id=0)
    assert ids.tolist() == [[5, 6, 8], [7, 9, 10]]
    assert mask.tolist() == [[False, False, True], [False, True, True]]
    ids, _ = collate([[5], [7, 7, 7]], [[8], [9]], pad_id=0)
    assert ids.tolist()[0] == [5, 8, 0, 0]


def test_a_tokenizer_without_pad_token_gets_a_clear_error():
    with pytest.raises(ValueError, match=r"pad_id is None: the tokenizer has no pad token; pass .*pad_id\(tokenizer\)"):
        collate([[5]], [[8]], pad_id=None)
