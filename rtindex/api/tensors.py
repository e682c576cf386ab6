"""Named dense tensors on the wire (``rtindex.v1.Tensor``): query features for a neural
scorer. Encoded batch-first, row-major, little-endian; decoding checks what it can
(known dtype, shape matching the bytes) and says what is wrong."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from rtindex.api.v1 import index_pb2

DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")


def encode(array: np.ndarray) -> index_pb2.Tensor:
    a = np.asarray(array)
    if a.dtype.name not in DTYPES:
        raise ValueError(f"feature tensors must have one of the dtypes {DTYPES}, got {a.dtype}")
    if a.ndim == 0:
        raise ValueError("feature tensors must be batch-first (at least one dimension), got a scalar")
    little = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return index_pb2.Tensor(dtype=a.dtype.name, shape=list(a.shape), data=np.ascontiguousarray(little).tobytes())


def decode(tensor: index_pb2.Tensor, name: str) -> np.ndarray:
    if tensor.dtype not in DTYPES:
        raise ValueError(f"feature {name!r}: dtype {tensor.dtype!r} is not one of {DTYPES}")
    if not tensor.shape:
        raise ValueError(f"feature {name!r}: shape is empty; tensors are batch-first, e.g. [batch, ...]")
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    expected = math.prod(tensor.shape) * dtype.itemsize  # exact: np.prod would wrap around for huge shapes
    if len(tensor.data) != expected:
        raise ValueError(f"feature {name!r}: shape {list(tensor.shape)} x {tensor.dtype} needs {expected} bytes, "
                         f"got {len(tensor.data)}")
    try:
        array = np.frombuffer(tensor.data, dtype).reshape(tuple(tensor.shape))
    except ValueError as exc:  # numpy's own limits: more dimensions than it has, or (with a 0 in it) too big a shape
        raise ValueError(f"feature {name!r}: shape {list(tensor.shape)} is not one numpy can hold ({exc}); "
                         "send a batch-first tensor of a few dimensions, e.g. [batch, width]") from None
    return array.astype(dtype.newbyteorder("="))


def encode_all(features: Mapping[str, np.ndarray]) -> dict[str, index_pb2.Tensor]:
    return {name: encode(value) for name, value in features.items()}


def decode_all(features: Mapping[str, index_pb2.Tensor]) -> dict[str, np.ndarray]:
    return {name: decode(tensor, name) for name, tensor in features.items()}
