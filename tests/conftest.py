"""Shared test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import os

import pytest
import torch

# under pytest-xdist (pyproject.toml's ``-n auto``) each worker takes its share of the cores: a
# worker at torch's default of every core would contend with the others
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run torch on one thread for modules of many small tensor ops: on a 2-core machine a
    second intra-op thread only adds synchronisation (and stalls when the cores are busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
