#!/usr/bin/python3
"""Exports an attention layer as an attnserve model repository entry.

Writes
    OUT/NAME/config.json
    OUT/NAME/VERSION/model.safetensors
in the layout the server loads (docs: DESIGN section 3). Needs only torch and
numpy: safetensors files are written and read by hand (8-byte little-endian
header length, JSON header, raw little-endian data).

Command line (always run with /usr/bin/python3):
    export_checkpoint.py --out DIR --name NAME [--version 1] --d-model E
        --heads H [--kv-heads K] [--bias | --no-bias] [--seed S] [--causal]
        [--naming torch|llama|bert] [--dtype float32|bfloat16|float16]
        [--prefix P] [--rope-theta T] [--rope-style half|interleaved]
        [--rope-dims N] [--sliding-window W]
    export_checkpoint.py --out DIR --name NAME --heads H
        --state-dict FILE.pt [--state-dict-prefix P] [...]

A Llama-style layer (GQA, rotary embeddings, Mistral's sliding window):
    export_checkpoint.py --out DIR --name llama --d-model 4096 --heads 32
        --kv-heads 8 --no-bias --naming llama --causal --rope-theta 10000
        [--sliding-window 4096]
The rotary and window settings go into config.json ("rope_theta",
"rope_style", "rope_dims", "sliding_window"); the weights are as projected
(the server rotates Q and K).

--state-dict exports a trained layer: FILE.pt is torch.save() of an
nn.MultiheadAttention's state_dict() (or of the module itself, or of a larger
model's state_dict with the layer under --state-dict-prefix, in any of the
three namings).

Otherwise, with --naming torch and no GQA the weights come from a seeded
nn.MultiheadAttention(E, H, batch_first=True) (its biases, which PyTorch
initialises to zero, are re-drawn from U(-0.1, 0.1) so that they matter);
otherwise q/k/v/o weights are drawn from U(-1/sqrt(E), 1/sqrt(E)).

As a library (integration tests):
    export_module(module, out_dir, name, version=1, naming="torch", ...)
    load_safetensors(path) -> {name: numpy array}
    attention_weights(tensors, num_heads, ...) -> {"wq": ..., ..., "bo": ...}
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

# safetensors dtype -> (numpy little-endian dtype, itemsize). BF16 has no
# numpy dtype: it is stored as raw uint16 and widened to float32 on load.
_NUMPY_DTYPES = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
    "I16": ("<i2", 2),
    "I8": ("i1", 1),
    "U8": ("u1", 1),
    "BOOL": ("?", 1),
}

_DTYPE_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
_TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16,
                 "F16": torch.float16}

NAMINGS = ("torch", "llama", "bert")


def _encode(value, dtype_name):
    """Returns (safetensors dtype, shape, bytes) of a tensor or array."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    t = value.detach().cpu()
    if dtype_name is not None:
        t = t.to(_TORCH_DTYPES[dtype_name])
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        data = t.view(torch.int16).numpy().astype("<i2").tobytes()
        return "BF16", list(t.shape), data
    for name, torch_dtype in (("F32", torch.float32), ("F16", torch.float16),
                              ("F64", torch.float64), ("I64", torch.int64),
                              ("I32", torch.int32), ("I16", torch.int16),
                              ("I8", torch.int8), ("U8", torch.uint8),
                              ("BOOL", torch.bool)):
        if t.dtype == torch_dtype:
            np_dtype = _NUMPY_DTYPES[name][0]
            return name, list(t.shape), t.numpy().astype(np_dtype).tobytes()
    raise ValueError(f"unsupported tensor dtype {t.dtype}")


def write_safetensors(path, tensors, metadata=None, dtype=None):
    """Writes {name: tensor or array} to `path` (atomically).

    dtype: None keeps each tensor's dtype; "F32", "BF16" or "F16" converts
    every tensor.
    """
    header = {}
    chunks = []
    offset = 0
    for name, value in tensors.items():
        st_dtype, shape, data = _encode(value, dtype)
        header[name] = {"dtype": st_dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # align the data region to 8
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for chunk in chunks:
            f.write(chunk)
    os.replace(tmp, path)


def load_safetensors(path):
    """Reads a safetensors file into {name: numpy array}.

    F32 -> float32, F16 -> float16, BF16 -> float32 (exact), others as their
    numpy dtype. Raises ValueError for a malformed file.
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError(f"{path}: header length {n} exceeds the file")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        np_dtype, itemsize = _NUMPY_DTYPES[entry["dtype"]]
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if not 0 <= begin <= end <= len(data) or \
                end - begin != itemsize * math.prod(shape):
            raise ValueError(f"{path}: tensor {name!r}: bad data_offsets")
        arr = np.frombuffer(data[begin:end], dtype=np_dtype).reshape(shape)
        if entry["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.copy()
    return out


def _weights_of(module, num_heads):
    """{"wq", ..., "bo"} torch tensors of a module or a mapping."""
    if isinstance(module, torch.nn.MultiheadAttention):
        e = module.embed_dim
        if module.in_proj_weight is not None:
            wq, wk, wv = module.in_proj_weight.detach().split(e)
        else:
            wq = module.q_proj_weight.detach()
            wk = module.k_proj_weight.detach()
            wv = module.v_proj_weight.detach()
        w = {"wq": wq, "wk": wk, "wv": wv,
             "wo": module.out_proj.weight.detach()}
        if module.in_proj_bias is not None:
            w["bq"], w["bk"], w["bv"] = module.in_proj_bias.detach().split(e)
        if module.out_proj.bias is not None:
            w["bo"] = module.out_proj.bias.detach()
        return w, module.num_heads
    if num_heads is None:
        raise ValueError("num_heads is required when exporting a mapping")
    return {k: torch.as_tensor(v) for k, v in module.items()}, num_heads


def _named_tensors(w, naming, prefix):
    p = prefix
    if naming == "torch":
        if not (w["wq"].shape == w["wk"].shape == w["wv"].shape):
            raise ValueError("torch naming needs num_kv_heads == num_heads")
        t = {p + "in_proj_weight": torch.cat([w["wq"], w["wk"], w["wv"]])}
        if "bq" in w:
            t[p + "in_proj_bias"] = torch.cat([w["bq"], w["bk"], w["bv"]])
        t[p + "out_proj.weight"] = w["wo"]
        if "bo" in w:
            t[p + "out_proj.bias"] = w["bo"]
        return t
    names = {
        "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
        "bert": ("self.query", "self.key", "self.value", "output.dense"),
    }[naming]
    t = {}
    for key, base in zip("qkvo", names):
        t[f"{p}{base}.weight"] = w["w" + key]
        if "b" + key in w:
            t[f"{p}{base}.bias"] = w["b" + key]
    return t


ROPE_STYLES = ("half", "interleaved")


def rope_config(head_dim, causal, rope_theta=0.0, rope_style="half",
                rope_dims=0, sliding_window=0):
    """The config.json keys of rotary embeddings and sliding windows (only
    those that differ from the defaults), checked as the server checks
    them. Raises ValueError naming the setting."""
    out = {}
    if rope_theta < 0 or rope_theta != rope_theta:
        raise ValueError(f"rope_theta must be >= 0 (0 = no RoPE), got {rope_theta}")
    if rope_style not in ROPE_STYLES:
        raise ValueError(f"rope_style must be one of {ROPE_STYLES}, got {rope_style!r}")
    if rope_dims < 0 or rope_dims % 2 or rope_dims > head_dim:
        raise ValueError(f"rope_dims must be even and in [0, head_dim = {head_dim}] "
                         f"(0 = head_dim), got {rope_dims}")
    if rope_dims and not rope_theta:
        raise ValueError("rope_dims is set but rope_theta is 0 (no RoPE)")
    if sliding_window < 0:
        raise ValueError(f"sliding_window must be >= 0, got {sliding_window}")
    if sliding_window and not causal:
        raise ValueError("sliding_window needs a causal layer (--causal)")
    if rope_theta:
        out["rope_theta"] = float(rope_theta)
        out["rope_style"] = rope_style
        if rope_dims:
            out["rope_dims"] = int(rope_dims)
    if sliding_window:
        out["sliding_window"] = int(sliding_window)
    return out


def export_module(module, out_dir, name, version=1, naming="torch",
                  dtype="float32", prefix="", causal=False, num_heads=None,
                  config_extra=None, rope_theta=0.0, rope_style="half",
                  rope_dims=0, sliding_window=0):
    """Exports an attention layer; returns (config_path, checkpoint_path).

    module: an nn.MultiheadAttention (batch_first or not; packed or separate
      q/k/v weights), or a mapping with "wq", "wk", "wv", "wo" and optional
      "bq", "bk", "bv", "bo" ([out, in] tensors/arrays; then num_heads is
      required; fewer k/v rows than q rows means grouped-query attention).
    naming: "torch" (nn.MultiheadAttention state_dict), "llama" or "bert".
    dtype: "float32", "bfloat16" or "float16" for the stored weights.
    config_extra: more config.json keys (e.g. {"compute_dtype": "bfloat16"}).
    rope_theta, rope_style, rope_dims, sliding_window: the layer's rotary
      embedding and sliding window (rope_config; 0 = none).
    """
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {list(_DTYPE_NAMES)}")
    if int(version) < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    w, heads = _weights_of(module, num_heads)
    head_dim = w["wq"].shape[0] // heads
    kv_heads = w["wk"].shape[0] // head_dim
    config = {"num_heads": int(heads)}
    if kv_heads != heads:
        config["num_kv_heads"] = int(kv_heads)
    if heads * head_dim != w["wq"].shape[1]:
        config["head_dim"] = int(head_dim)
    config["causal"] = bool(causal)
    config.update(rope_config(head_dim, causal, rope_theta, rope_style,
                              rope_dims, sliding_window))
    config.update(config_extra or {})

    model_dir = os.path.join(out_dir, name)
    version_dir = os.path.join(model_dir, str(int(version)))
    os.makedirs(version_dir, exist_ok=True)
    config_path = os.path.join(model_dir, "config.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    checkpoint_path = os.path.join(version_dir, "model.safetensors")
    write_safetensors(checkpoint_path, _named_tensors(w, naming, prefix),
                      metadata={"format": "pt", "naming": naming},
                      dtype=_DTYPE_NAMES[dtype])
    return config_path, checkpoint_path


def attention_weights(tensors, prefix=""):
    """The inverse of export: {"wq", ..., "bo"} float32 arrays from loaded
    tensors in any of the three namings under `prefix` (absent biases are
    left out)."""
    t = {k[len(prefix):]: np.asarray(v, dtype=np.float32)
         for k, v in tensors.items() if k.startswith(prefix)}
    if "in_proj_weight" in t or "q_proj_weight" in t:
        wo = t["out_proj.weight"]
        if "in_proj_weight" in t:
            hq = wo.shape[1]
            hkv = (t["in_proj_weight"].shape[0] - hq) // 2
            wq, wk, wv = np.split(t["in_proj_weight"], [hq, hq + hkv])
        else:
            wq, wk, wv = (t["q_proj_weight"], t["k_proj_weight"],
                          t["v_proj_weight"])
            hq, hkv = wq.shape[0], wk.shape[0]
        w = {"wq": wq, "wk": wk, "wv": wv, "wo": wo}
        if "in_proj_bias" in t:
            w["bq"], w["bk"], w["bv"] = np.split(t["in_proj_bias"],
                                                 [hq, hq + hkv])
        if "out_proj.bias" in t:
            w["bo"] = t["out_proj.bias"]
        return w
    for names in (("q_proj", "k_proj", "v_proj", "o_proj"),
                  ("self.query", "self.key", "self.value", "output.dense")):
        if names[0] + ".weight" in t:
            w = {}
            for key, base in zip("qkvo", names):
                w["w" + key] = t[base + ".weight"]
                if base + ".bias" in t:
                    w["b" + key] = t[base + ".bias"]
            return w
    raise ValueError(f"no attention layer under prefix {prefix!r}")


def random_module(d_model, heads, kv_heads=None, bias=True, seed=0):
    """Seeded weights: an nn.MultiheadAttention when kv_heads == heads,
    else a mapping of GQA weights (see the module docstring)."""
    kv_heads = kv_heads or heads
    if d_model % heads != 0:
        raise ValueError(f"--heads {heads} must divide --d-model {d_model}")
    if heads % kv_heads != 0:
        raise ValueError(f"--kv-heads {kv_heads} must divide --heads {heads}")
    gen = torch.Generator().manual_seed(seed)
    if kv_heads == heads:
        torch.manual_seed(seed)
        m = torch.nn.MultiheadAttention(d_model, heads, bias=bias,
                                        batch_first=True)
        if bias:
            with torch.no_grad():
                m.in_proj_bias.uniform_(-0.1, 0.1, generator=gen)
                m.out_proj.bias.uniform_(-0.1, 0.1, generator=gen)
        return m
    head_dim = d_model // heads
    bound = 1.0 / math.sqrt(d_model)

    def draw(*shape):
        return (torch.rand(*shape, generator=gen) * 2 - 1) * bound

    kv = kv_heads * head_dim
    w = {"wq": draw(d_model, d_model), "wk": draw(kv, d_model),
         "wv": draw(kv, d_model), "wo": draw(d_model, d_model)}
    if bias:
        w.update(bq=draw(d_model), bk=draw(kv), bv=draw(kv),
                 bo=draw(d_model))
    return w


def load_state_dict(path, prefix=""):
    """{"wq", ..., "bo"} arrays of the attention layer saved at `path`
    (torch.save of a state_dict or of an nn.MultiheadAttention)."""
    obj = torch.load(path, map_location="cpu")
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state_dict or a module, got "
                         f"{type(obj).__name__}")
    tensors = {k: v.detach().float().numpy() for k, v in obj.items()
               if isinstance(v, torch.Tensor)}
    try:
        return attention_weights(tensors, prefix)
    except KeyError as e:
        raise ValueError(f"{path}: tensor {e} missing under prefix "
                         f"{prefix!r}") from None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="model repository directory")
    ap.add_argument("--name", required=True, help="model name")
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--d-model", type=int,
                    help="width of a random layer (not with --state-dict)")
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--bias", action=argparse.BooleanOptionalAction,
                    default=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--naming", choices=NAMINGS, default="torch")
    ap.add_argument("--dtype", choices=list(_DTYPE_NAMES), default="float32")
    ap.add_argument("--prefix", default="",
                    help="prefix of the tensor names written")
    ap.add_argument("--rope-theta", type=float, default=0.0,
                    help="rotary embedding base (Llama: 10000; 0 = none)")
    ap.add_argument("--rope-style", choices=ROPE_STYLES, default="half",
                    help="half: Hugging Face rotate_half; interleaved: GPT-J")
    ap.add_argument("--rope-dims", type=int, default=0,
                    help="rotated dimensions per head (0 = head_dim)")
    ap.add_argument("--sliding-window", type=int, default=0,
                    help="keys a query sees, itself included (0 = all); "
                         "needs --causal")
    ap.add_argument("--state-dict", default=None,
                    help="torch.save()d state_dict (or module) to export "
                         "instead of a random layer")
    ap.add_argument("--state-dict-prefix", default="",
                    help="prefix of the layer's tensors in --state-dict")
    args = ap.parse_args(argv)
    if (args.state_dict is None) == (args.d_model is None):
        ap.error("give exactly one of --d-model (random layer) and "
                 "--state-dict (trained layer)")
    try:
        if args.state_dict is not None:
            module = load_state_dict(args.state_dict, args.state_dict_prefix)
        else:
            module = random_module(args.d_model, args.heads, args.kv_heads,
                                   args.bias, args.seed)
        paths = export_module(module, args.out, args.name, args.version,
                              naming=args.naming, dtype=args.dtype,
                              prefix=args.prefix, causal=args.causal,
                              num_heads=args.heads,
                              rope_theta=args.rope_theta,
                              rope_style=args.rope_style,
                              rope_dims=args.rope_dims,
                              sliding_window=args.sliding_window)
    except ValueError as e:
        ap.error(str(e))
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
