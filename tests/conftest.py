from __future__ import annotations

import numpy as np
import pytest

from rtindex import datasets

# the skip policy (tests/skip_policy.py): in CI an unexpected skip fails the run
pytest_plugins = ["skip_policy"]


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


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The real broker started by scripts/kafka.sh (scripts/test.sh and CI start it).
    Kafka tests fail rather than skip without it, unless RTINDEX_TEST_KAFKA_OPTIONAL=1."""
    import os

    from confluent_kafka.admin import AdminClient

    bootstrap = os.environ.get("RTINDEX_TEST_KAFKA", "127.0.0.1:19092")
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    except Exception as exc:
        message = f"no Kafka broker at {bootstrap} ({exc}); start one with scripts/kafka.sh start"
        if os.environ.get("RTINDEX_TEST_KAFKA_OPTIONAL") == "1":
            pytest.skip(message)
        pytest.fail(message)
    return bootstrap
