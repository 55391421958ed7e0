#!/usr/bin/python3
"""Writes the request_fuzzer seed corpus (tests/fuzz/corpus_request/).

Each seed is a serialized attn.v1.AttendRequest for the fuzz model (d_model 8,
max_sequence_length 32..64): valid requests covering every dtype, rank, mask
kind, key/value and key_lengths, and a few near-misses. Needs protoc and
Debian's python3-protobuf:  /usr/bin/python3 tests/fuzz/make_request_corpus.py
"""
import os
import pathlib
import struct
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fuzz" / "corpus_request"


def load_pb2(tmp):
    subprocess.run(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp}",
                    "attn/v1/attention.proto"], check=True)
    sys.path.insert(0, tmp)
    from attn.v1 import attention_pb2  # pylint: disable=import-outside-toplevel
    return attention_pb2


def main():
    with tempfile.TemporaryDirectory() as tmp:
        pb = load_pb2(tmp)

        def tensor(shape, dtype=pb.FLOAT32, fill=0.25):
            n = 1
            for d in shape:
                n *= d
            t = pb.Tensor(shape=shape, dtype=dtype)
            if dtype == pb.FLOAT32:
                t.data = struct.pack(f"<{n}f", *([fill] * n))
            elif dtype == pb.BFLOAT16:
                t.data = struct.pack("<f", fill)[2:4] * n
            elif dtype == pb.FLOAT16:
                t.data = struct.pack("<e", fill) * n
            else:  # BOOL: alternate
                t.data = bytes(i % 2 for i in range(n))
            return t

        seeds = {
            "self_f32_rank3": pb.AttendRequest(
                model="fuzz", query=tensor([2, 3, 8])),
            "self_bf16_rank2_weights": pb.AttendRequest(
                model="fuzz", query=tensor([4, 8], pb.BFLOAT16),
                return_attention_weights=True, output_dtype=pb.BFLOAT16),
            "cross_f16_bool_mask": pb.AttendRequest(
                model="fuzz", query=tensor([1, 2, 8], pb.FLOAT16),
                key=tensor([1, 5, 8], pb.FLOAT16),
                value=tensor([1, 5, 8], pb.FLOAT16, -0.5),
                attn_mask=tensor([1, 2, 5], pb.BOOL), output_dtype=pb.FLOAT16),
            "key_only_additive_mask_lengths": pb.AttendRequest(
                model="fuzz", query=tensor([2, 3, 8]),
                key=tensor([2, 4, 8]), attn_mask=tensor([3, 4], fill=-1.5),
                key_lengths=[4, 2], causal=True, request_id="r1"),
            "value_without_key": pb.AttendRequest(
                model="fuzz", query=tensor([3, 8]), value=tensor([3, 8])),
            "wrong_d_model": pb.AttendRequest(
                model="fuzz", query=tensor([1, 2, 6])),
            "huge_dims_no_data": pb.AttendRequest(
                model="fuzz",
                query=pb.Tensor(shape=[1 << 40, 1 << 20, 8], dtype=pb.FLOAT32),
                return_attention_weights=True),
            "short_data": pb.AttendRequest(
                model="fuzz",
                query=pb.Tensor(shape=[2, 8], dtype=pb.FLOAT32, data=b"\0" * 60)),
        }
        OUT.mkdir(exist_ok=True)
        for name, request in seeds.items():
            (OUT / name).write_bytes(request.SerializeToString())
        print(f"wrote {len(seeds)} seeds to {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
