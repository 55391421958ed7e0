"""attnserve: Python client of the attnserve gRPC attention service.

Example:
    import numpy as np
    import attnserve

    with attnserve.Client("127.0.0.1:50051") as client:
        result = client.attend(np.random.rand(2, 8, 256).astype(np.float32))
        print(result.output.shape, result.timing)

Errors raised by the server surface as ``grpc.RpcError`` (with ``code()`` and
``details()``), untouched.
"""
import os as _os
import sys as _sys

# The generated gRPC module does `from attn.v1 import attention_pb2`, so the
# directory holding the generated `attn` package must be importable.
_GENERATED = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "_generated")
if _GENERATED not in _sys.path:
    _sys.path.insert(0, _GENERATED)

from attnserve.client import (  # noqa: E402
    AttendError,
    AttendResult,
    Client,
    Timing,
)
from attnserve.tensors import decode_tensor, encode_tensor  # noqa: E402
from attn.v1 import attention_pb2  # noqa: E402

__all__ = [
    "AttendError",
    "AttendResult",
    "Client",
    "Timing",
    "attention_pb2",
    "decode_tensor",
    "encode_tensor",
]
