"""``rtindex.client.IndexClient``: the public import path of the gRPC client (its code
lives in ``rtindex.api.client``). Importing it loads no engine, numba or TensorFlow."""

from rtindex.api.client import *  # noqa: F403
from rtindex.api.client import __all__  # noqa: F401
