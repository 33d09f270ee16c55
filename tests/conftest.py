"""Shared pytest fixtures: the one way tests reach ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsafe_plugin.shared_data import find_shared_data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public safety data folder; tests that need it skip with a reason if it is absent."""
    root = find_shared_data()
    if root is None:
        pytest.skip("../shared/data is absent (set FEDSAFE_SHARED_DATA to run data tests)")
    return root
