"""numpy <-> attn.v1.Tensor conversion (raw little-endian bytes)."""
import numpy as np

from attn.v1 import attention_pb2

_DTYPES = {
    np.dtype(np.float32): attention_pb2.FLOAT32,
    np.dtype(np.float16): attention_pb2.FLOAT16,
    np.dtype(np.bool_): attention_pb2.BOOL,
}

# Names accepted for the bfloat16 wire dtype (numpy has no bfloat16).
BFLOAT16 = "bfloat16"


def _float_to_bfloat16_bits(values):
    """float32 array -> uint16 bfloat16 bits, round to nearest even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    nan = np.isnan(values)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def wire_dtype(dtype):
    """Maps np.float32/np.float16/np.bool_/"bfloat16" to an attn.v1 DataType."""
    if isinstance(dtype, str) and dtype.lower() in ("bfloat16", "bf16"):
        return attention_pb2.BFLOAT16
    if isinstance(dtype, int) and dtype in attention_pb2.DataType.values():
        return dtype
    try:
        return _DTYPES[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise ValueError(
            f"unsupported dtype {dtype!r}; expected np.float32, np.float16, "
            "'bfloat16' or np.bool_") from None


def encode_tensor(array, dtype=np.float32):
    """Encodes an array-like as an attn.v1.Tensor of the given wire dtype.

    Booleans arrays are always sent as BOOL (one byte per element).
    """
    array = np.asarray(array)
    if array.dtype == np.bool_:
        code = attention_pb2.BOOL
    else:
        code = wire_dtype(dtype)
    if code == attention_pb2.FLOAT32:
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    elif code == attention_pb2.FLOAT16:
        data = np.ascontiguousarray(array, dtype="<f2").tobytes()
    elif code == attention_pb2.BFLOAT16:
        data = _float_to_bfloat16_bits(np.asarray(array, dtype=np.float32)).astype("<u2").tobytes()
    elif code == attention_pb2.BOOL:
        data = np.ascontiguousarray(array, dtype=np.bool_).astype(np.uint8).tobytes()
    else:
        raise ValueError(f"cannot encode dtype {code}")
    return attention_pb2.Tensor(shape=list(array.shape), dtype=code, data=data)


def decode_tensor(tensor):
    """Decodes an attn.v1.Tensor to a numpy array (float32, or bool for BOOL)."""
    shape = tuple(int(d) for d in tensor.shape)
    if tensor.dtype == attention_pb2.FLOAT32:
        flat = np.frombuffer(tensor.data, dtype="<f4")
    elif tensor.dtype == attention_pb2.FLOAT16:
        flat = np.frombuffer(tensor.data, dtype="<f2").astype(np.float32)
    elif tensor.dtype == attention_pb2.BFLOAT16:
        bits = np.frombuffer(tensor.data, dtype="<u2").astype(np.uint32) << 16
        flat = bits.view(np.float32)
    elif tensor.dtype == attention_pb2.BOOL:
        flat = np.frombuffer(tensor.data, dtype=np.uint8) != 0
    else:
        raise ValueError(f"tensor has unsupported dtype {tensor.dtype}")
    expected = int(np.prod(shape, dtype=np.int64))
    if flat.size != expected:
        raise ValueError(
            f"tensor of shape {list(shape)} needs {expected} elements, data holds {flat.size}")
    return flat.reshape(shape).copy()
