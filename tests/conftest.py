"""Shared fixtures: where the real datasets live, and a quiet torch."""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = Path(os.environ.get("TABEMBED_SHARED", REPO.parent / "shared")) / "datasets"

# Tests run many tiny models; one thread avoids oversubscribing 2-core machines.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "ml-100k" / "u.data").is_file():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS} (set TABEMBED_SHARED)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def adult():
    from tabembed.datasets import load_adult

    return load_adult()
