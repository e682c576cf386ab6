from __future__ import annotations

import numpy as np
import pytest

from rtindex import datasets


@pytest.fixture(scope="session")
def sift5k() -> datasets.Dataset:
    return datasets.load("sift5k")


@pytest.fixture(scope="session")
def glove25() -> datasets.Dataset:
    return datasets.load("glove25")


@pytest.fixture(scope="session")
def clustered_64() -> np.ndarray:
    """20k x 64 unit-norm clustered vectors (synthetic, seeded)."""
    return datasets.clustered(24_000, 64, clusters=50, std=0.35, seed=7)
