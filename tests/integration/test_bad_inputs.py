"""Malformed requests through the real server: each gets the exact gRPC
status code, and the server keeps serving correct results afterwards."""
import tempfile
import unittest

import grpc
import numpy as np
import torch

import attnserve
from attnserve import attention_pb2
import server_harness as h

D = 64
MAX_SEQ = 16


def make_mha(seed):
    torch.manual_seed(seed)
    return torch.nn.MultiheadAttention(D, 4, batch_first=True).eval()


class BadInputsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        exporter = h.import_exporter()
        cls.mha = make_mha(1)
        exporter.export_module(cls.mha, cls.tmp.name, "mha64", version=1,
                               config_extra={"max_sequence_length": MAX_SEQ})
        # Same weights, default sequence limit: for requests that take
        # milliseconds to compute.
        exporter.export_module(cls.mha, cls.tmp.name, "mha64long", version=1)
        cls.server = h.ServerProcess(cls.tmp.name)
        cls.target = cls.server.start()
        cls.client = attnserve.Client(cls.target)
        cls.stub = cls.client._stub
        cls.rng = np.random.default_rng(0)

    @classmethod
    def tearDownClass(cls):
        h.tear_down_class(cls)

    def tearDown(self):
        self.assertTrue(self.server.alive(),
                        f"server died; stderr:\n{self.server.stderr_text()}")

    def x(self, *shape):
        return h.random_array(self.rng, *shape)

    def assertCode(self, code, call, *args, **kwargs):
        with self.assertRaises(grpc.RpcError) as ctx:
            call(*args, **kwargs)
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        self.assertTrue(ctx.exception.details(), "error without a message")
        return ctx.exception.details()

    def raw_attend(self, request):
        return self.stub.Attend(request, timeout=30)

    def request(self, **kwargs):
        kwargs.setdefault("model", "mha64")
        return attnserve.Client.build_request(**kwargs)

    # -- NOT_FOUND -------------------------------------------------------------

    def test_unknown_model(self):
        details = self.assertCode(grpc.StatusCode.NOT_FOUND, self.client.attend,
                                  self.x(1, 2, D), model="nope")
        self.assertIn("nope", details)

    def test_unknown_version(self):
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.client.attend, self.x(1, 2, D),
                        model="mha64", version=7)

    def test_get_model_unknown(self):
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.client.get_model, "nope")

    # -- INVALID_ARGUMENT: tensors -------------------------------------------------

    def test_wrong_d_model(self):
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend,
                        self.x(1, 3, D // 2), model="mha64")

    def test_key_wrong_d_model(self):
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend,
                        self.x(1, 3, D), self.x(1, 3, D + 1), self.x(1, 3, D + 1),
                        model="mha64")

    def test_byte_length_mismatch(self):
        request = self.request(query=self.x(1, 4, D))
        request.query.data = request.query.data[:-4]
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.raw_attend, request)
        request = self.request(query=self.x(1, 4, D))
        request.query.data += b"\0\0\0\0"
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.raw_attend, request)

    def test_nan_and_inf_rejected(self):
        q = self.x(1, 3, D)
        q[0, 1, 5] = np.nan
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend, q,
                        model="mha64")
        q = self.x(1, 3, D)
        k = self.x(1, 3, D)
        k[0, 0, 0] = np.inf
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend, q, k, k,
                        model="mha64")
        q = self.x(1, 3, D)
        q[0, 0, 0] = np.nan
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend, q,
                        model="mha64", dtype="bfloat16")

    def test_bad_rank(self):
        for shape in [(D,), (1, 1, 3, D)]:
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend,
                            self.x(*shape), model="mha64")

    def test_missing_query(self):
        request = attention_pb2.AttendRequest(model="mha64")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.raw_attend, request)

    def test_unspecified_and_bool_query_dtype(self):
        request = self.request(query=self.x(1, 2, D))
        request.query.dtype = attention_pb2.DATA_TYPE_UNSPECIFIED
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.raw_attend, request)
        request = self.request(query=np.ones((1, 2, D), dtype=bool))
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.raw_attend, request)

    def test_negative_dimension(self):
        request = self.request(query=self.x(1, 2, D))
        request.query.shape[:] = [1, -2, D]
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.raw_attend, request)

    def test_key_value_disagree(self):
        q = self.x(2, 3, D)
        # Different Sk.
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend, q,
                        self.x(2, 4, D), self.x(2, 5, D), model="mha64")
        # Batch differs from the query's.
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend, q,
                        self.x(3, 4, D), self.x(3, 4, D), model="mha64")

    def test_key_dtype_differs_from_query(self):
        request = self.request(query=self.x(1, 3, D))
        request.key.CopyFrom(attnserve.encode_tensor(self.x(1, 3, D), np.float16))
        request.value.CopyFrom(attnserve.encode_tensor(self.x(1, 3, D), np.float16))
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.raw_attend, request)

    def test_value_without_key(self):
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend,
                        self.x(1, 3, D), None, self.x(1, 3, D), model="mha64")

    # -- INVALID_ARGUMENT: key_lengths, masks, limits ---------------------------

    def test_key_lengths_wrong_count(self):
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend,
                        self.x(2, 3, D), key_lengths=[3], model="mha64")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend,
                        self.x(2, 3, D), key_lengths=[3, 3, 3], model="mha64")

    def test_key_lengths_out_of_range(self):
        for lengths in ([4, 3], [-1, 3]):
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend,
                            self.x(2, 3, D), key_lengths=lengths, model="mha64")

    def test_mask_wrong_shape(self):
        q = self.x(2, 3, D)
        for mask in [np.zeros((3, 4), np.float32), np.zeros((4, 3), bool),
                     np.zeros((3, 3, 3), np.float32), np.zeros((3,), np.float32),
                     np.zeros((1, 2, 3, 3), np.float32)]:
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend, q,
                            attn_mask=mask, model="mha64")

    def test_mask_byte_length_and_nan(self):
        request = self.request(query=self.x(1, 3, D), attn_mask=np.zeros((3, 3), bool))
        request.attn_mask.data = request.attn_mask.data[:-1]
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.raw_attend, request)
        mask = np.zeros((3, 3), np.float32)
        mask[1, 1] = np.nan
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend,
                        self.x(1, 3, D), attn_mask=mask, model="mha64")

    def test_sequence_over_max_length(self):
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend,
                        self.x(1, MAX_SEQ + 1, D), model="mha64")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.client.attend,
                        self.x(1, 2, D), self.x(1, MAX_SEQ + 1, D),
                        self.x(1, MAX_SEQ + 1, D), model="mha64")
        # Exactly at the limit is fine.
        out = self.client.attend(self.x(1, MAX_SEQ, D), model="mha64").output
        self.assertEqual(out.shape, (1, MAX_SEQ, D))

    def test_client_deadline_exceeded(self):
        # gRPC keeps deadlines at millisecond granularity, so a 1 us timeout
        # may leave the server up to ~1 ms; the request computes for far
        # longer (4 x 2048 tokens), so the answer can never arrive in time.
        self.assertCode(grpc.StatusCode.DEADLINE_EXCEEDED, self.client.attend,
                        self.x(4, 2048, D), model="mha64long", timeout=1e-6)

    # -- and the server still answers correctly ------------------------------

    def test_zz_still_serving_correctly(self):
        q = self.x(2, 5, D)
        got = self.client.attend(q, model="mha64").output
        with torch.no_grad():
            expected, _ = self.mha(torch.from_numpy(q), torch.from_numpy(q),
                                   torch.from_numpy(q), need_weights=False)
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=0)
        self.assertEqual(self.client.health(), "SERVING")


if __name__ == "__main__":
    unittest.main(verbosity=2)
