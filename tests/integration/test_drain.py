"""Zero-loss drain, health names and connection flags, through the real
attn_server binary.

Drain (SIGTERM under load): eight client threads (one channel each) send
64-token Attend requests to the demo model, or four AttendStream streams
with up to four requests outstanding each (also as KServe v2
ModelStreamInfer streams), and SIGTERM comes mid-load. Every
call must get an answer, and the only outcomes allowed are OK and
UNAVAILABLE (never CANCELLED, never a reset); the server exits 0. An
AttendStream stream ends OK, or UNAVAILABLE after answering every request
it read (in order); the unanswered ones are resent on a new stream.
ModelStreamInfer streams drain the same way (answers in completion order).
Outcome counts over all rounds are printed.
"""
import collections
import signal
import threading
import time
import unittest

import numpy as np

import attnserve  # noqa: F401  (puts the generated stubs on sys.path)
from attn.v1 import attention_pb2, attention_pb2_grpc
import grpc
import health_pb2
from inference import grpc_service_pb2 as v2_pb
from inference import grpc_service_pb2_grpc as v2_grpc
import server_harness as h

ROUNDS = 10
CLIENT_THREADS = 8
STREAMS = 4
STREAM_WINDOW = 4
LOAD_BEFORE_SIGTERM_S = 0.6
D_MODEL = 256  # the demo model
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}


def attend_request(rng, request_id=""):
    query = rng.uniform(-1, 1, size=(64, D_MODEL)).astype(np.float32)
    return attention_pb2.AttendRequest(
        model="demo", request_id=request_id,
        query=attention_pb2.Tensor(shape=[64, D_MODEL], dtype=attention_pb2.FLOAT32,
                                   data=query.tobytes()))


def v2_request(rng, request_id):
    query = rng.uniform(-1, 1, size=(64, D_MODEL)).astype(np.float32)
    r = v2_pb.ModelInferRequest(model_name="demo", id=request_id)
    r.inputs.add(name="query", datatype="FP32", shape=[64, D_MODEL])
    r.raw_input_contents.append(query.tobytes())
    return r


# Per stream kind: (stub's method, request maker, answer -> (error, id)).
STREAM_KINDS = {
    "AttendStream": (
        lambda ch: attention_pb2_grpc.AttentionServiceStub(ch).AttendStream,
        attend_request,
        lambda r: (r.error.message if r.HasField("error") else "", r.request_id)),
    "ModelStreamInfer": (
        lambda ch: v2_grpc.GRPCInferenceServiceStub(ch).ModelStreamInfer,
        v2_request,
        lambda r: (r.error_message, r.infer_response.id)),
}


def health_status(channel, service):
    stub = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString)
    try:
        response = stub(health_pb2.HealthCheckRequest(service=service), timeout=5)
    except grpc.RpcError as e:
        return e.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def sigterm_and_wait(server):
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=h.SHUTDOWN_TIMEOUT_S)
    server.proc = None  # stopped here; running_server must not signal it
    return code


class DrainTest(unittest.TestCase):
    totals = collections.Counter()

    @classmethod
    def tearDownClass(cls):
        print("\ndrain outcome counts over all rounds:", dict(cls.totals), flush=True)

    def run_round(self, worker, workers):
        server = h.ServerProcess(extra_args=["--threads=1"])
        target = server.start()
        try:
            stop = threading.Event()
            counts = collections.Counter()
            lock = threading.Lock()
            errors = []

            def run(index):
                try:
                    local = worker(target, index, stop)
                except Exception as e:  # a lost call: no status at all
                    errors.append(repr(e))
                    return
                with lock:
                    counts.update(local)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
            for t in threads:
                t.start()
            time.sleep(LOAD_BEFORE_SIGTERM_S)
            code = sigterm_and_wait(server)
            stop.set()
            for t in threads:
                t.join(timeout=60)
                self.assertFalse(t.is_alive(), "a client thread never got an answer")
        finally:
            server._kill()
        self.assertEqual(errors, [])
        self.assertEqual(code, 0, server.stderr_text())
        return counts

    def test_unary_drain_loses_nothing(self):
        def worker(target, index, stop):
            rng = np.random.default_rng(index)
            local = collections.Counter()
            with grpc.insecure_channel(target) as channel:
                stub = attention_pb2_grpc.AttentionServiceStub(channel)
                unavailable_after_stop = 0
                while unavailable_after_stop < 3:
                    try:
                        response = stub.Attend(attend_request(rng), timeout=30)
                        self.assertEqual(list(response.output.shape), [64, D_MODEL])
                        local["unary OK"] += 1
                    except grpc.RpcError as e:
                        local[f"unary {e.code().name}"] += 1
                        if e.code() == grpc.StatusCode.UNAVAILABLE and stop.is_set():
                            unavailable_after_stop += 1
                        if e.code() != grpc.StatusCode.UNAVAILABLE:
                            local[f"unary detail {e.details()}"] += 1
            return local

        for _ in range(ROUNDS):
            counts = self.run_round(worker, CLIENT_THREADS)
            self.totals.update(counts)
            codes = {k for k in counts if k.startswith("unary ")}
            self.assertLessEqual(codes, {"unary OK", "unary UNAVAILABLE"}, counts)
            self.assertGreater(counts["unary OK"], 0, counts)

    def test_stream_drain_answers_every_read_request(self):
        self.stream_drain("AttendStream", ordered=True)

    def test_v2_stream_drain_answers_every_read_request(self):
        self.stream_drain("ModelStreamInfer", ordered=False)

    def stream_drain(self, kind, ordered):
        open_stream, make_request, answer_of = STREAM_KINDS[kind]

        def worker(target, index, stop):
            rng = np.random.default_rng(100 + index)
            local = collections.Counter()
            next_id = 0
            with grpc.insecure_channel(target) as channel:
                method = open_stream(channel)
                failed_after_stop = 0
                while failed_after_stop < 3:
                    window = threading.Semaphore(STREAM_WINDOW)
                    sent = []
                    ended = threading.Event()
                    half_close = threading.Event()

                    def requests():
                        nonlocal next_id
                        while not ended.is_set():
                            if stop.is_set() and len(sent) >= 2:
                                half_close.set()
                            if half_close.is_set():
                                return
                            if not window.acquire(timeout=0.05):
                                continue
                            sent.append(str(next_id))
                            next_id += 1
                            yield make_request(rng, sent[-1])

                    answered = []
                    call = method(requests(), timeout=30)
                    try:
                        for response in call:
                            error, request_id = answer_of(response)
                            self.assertEqual(error, "")
                            answered.append(request_id)
                            window.release()
                        code = grpc.StatusCode.OK
                    except grpc.RpcError as e:
                        code = e.code()
                        if code not in ALLOWED:
                            local[f"stream detail {e.details()}"] += 1
                    ended.set()
                    # Each answer is for a request sent, at most once
                    # (AttendStream: in order).
                    if ordered:
                        self.assertEqual(answered, sent[:len(answered)])
                    else:
                        self.assertEqual(len(set(answered)), len(answered))
                        self.assertLessEqual(set(answered), set(sent))
                    local["stream requests answered OK"] += len(answered)
                    local["stream requests unanswered, resent"] += len(sent) - len(answered)
                    local[f"stream end {code.name}"] += 1
                    if code == grpc.StatusCode.OK:
                        self.assertEqual(len(answered), len(sent))
                    if stop.is_set() and code != grpc.StatusCode.OK:
                        failed_after_stop += 1
                    if stop.is_set() and code == grpc.StatusCode.OK and half_close.is_set():
                        failed_after_stop += 1
            return local

        for _ in range(ROUNDS):
            counts = self.run_round(worker, STREAMS)
            self.totals.update(counts)
            ends = {k for k in counts if k.startswith("stream end ")}
            self.assertLessEqual(ends, {"stream end OK", "stream end UNAVAILABLE"}, counts)
            self.assertFalse([k for k in counts if k.startswith("stream detail")], counts)
            self.assertGreater(counts["stream requests answered OK"], 0, counts)


class HealthTest(unittest.TestCase):
    def test_names_while_serving(self):
        with h.running_server() as target, grpc.insecure_channel(target) as channel:
            self.assertEqual(health_status(channel, ""), "SERVING")
            self.assertEqual(health_status(channel, "attn.v1.AttentionService"), "SERVING")
            self.assertEqual(health_status(channel, "attn.v1.AttentionService/demo"),
                             "SERVING")
            self.assertEqual(health_status(channel, "attn.v1.AttentionService/nope"),
                             "NOT_FOUND")

    def test_not_serving_during_drain_delay_while_attend_succeeds(self):
        server = h.ServerProcess(extra_args=["--drain_delay_s=3", "--threads=1"])
        target = server.start()
        try:
            with grpc.insecure_channel(target) as channel:
                stub = attention_pb2_grpc.AttentionServiceStub(channel)
                rng = np.random.default_rng(7)
                stub.Attend(attend_request(rng), timeout=30)
                server.proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 2
                while health_status(channel, "") == "SERVING":
                    self.assertLess(time.monotonic(), deadline, "liveness stayed SERVING")
                    time.sleep(0.02)
                for name in ("", "attn.v1.AttentionService",
                             "attn.v1.AttentionService/demo"):
                    self.assertEqual(health_status(channel, name), "NOT_SERVING", name)
                # Still serving during the delay.
                response = stub.Attend(attend_request(rng), timeout=30)
                self.assertEqual(list(response.output.shape), [64, D_MODEL])
                self.assertIsNone(server.proc.poll())
            self.assertEqual(server.proc.wait(timeout=h.SHUTDOWN_TIMEOUT_S), 0)
        finally:
            server._kill()


class ConnectionAgeTest(unittest.TestCase):
    def test_old_connection_gets_goaway_and_client_reconnects(self):
        args = ["--grpc_max_connection_age_s=1", "--grpc_max_connection_age_grace_s=10",
                "--threads=1"]
        with h.running_server(extra_args=args) as target:
            states = []
            with grpc.insecure_channel(target) as channel:
                channel.subscribe(lambda s: states.append(s), try_to_connect=True)
                stub = attention_pb2_grpc.AttentionServiceStub(channel)
                rng = np.random.default_rng(3)
                calls = 0
                end = time.monotonic() + 4.5
                while time.monotonic() < end:
                    stub.Attend(attend_request(rng), timeout=30)  # raises on failure
                    calls += 1
                    time.sleep(0.02)
            ready = states.count(grpc.ChannelConnectivity.READY)
            # The 1 s age (+-10% jitter) over 4.5 s: at least two GOAWAYs,
            # hence at least three connections.
            self.assertGreaterEqual(ready, 3, states)
            self.assertGreater(calls, 10)


if __name__ == "__main__":
    unittest.main(verbosity=2)
