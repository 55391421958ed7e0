"""attnserve.Client: a thin numpy-friendly wrapper over the generated stubs."""
import collections

import grpc
import numpy as np

from attn.v1 import attention_pb2, attention_pb2_grpc
from attnserve import security
from attnserve import service_config
from attnserve._generated import health_pb2
from attnserve.tensors import decode_tensor, encode_tensor, wire_dtype

# Server-side timing of one request (microseconds; batch size in requests).
Timing = collections.namedtuple("Timing", ["queue_us", "compute_us", "batch_requests"])

# Result of one attention request. `output` has the query's rank;
# `attention_weights` is [B, H, Sq, Sk] or None when not asked for;
# `session_length` is the session's cached tokens after a session step (0
# for stateless requests).
AttendResult = collections.namedtuple(
    "AttendResult",
    ["output", "attention_weights", "timing", "model", "version", "request_id",
     "session_length"], defaults=[0])

_MAX_MESSAGE_BYTES = 256 << 20


class AttendError(grpc.RpcError):
    """An error of one request in attend_stream (the stream itself goes on).

    Carries the same accessors as the grpc.RpcError raised by unary calls:
    code() returns a grpc.StatusCode and details() the server's message.
    """

    def __init__(self, code, details, request_id=""):
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details
        self.request_id = request_id

    def code(self):
        return self._code

    def details(self):
        return self._details


def _status_code(value):
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def _result(response):
    weights = None
    if response.HasField("attention_weights"):
        weights = decode_tensor(response.attention_weights)
    timing = Timing(response.timing.queue_us, response.timing.compute_us,
                    response.timing.batch_requests)
    return AttendResult(decode_tensor(response.output), weights, timing,
                        response.model, response.version, response.request_id,
                        response.session_length)


class Client:
    """A connection to one attnserve server ("host:port").

    Thread-safe (gRPC channels are). Use as a context manager or call close().
    """

    def __init__(self, target, credentials=None, options=None, tls_ca=None, tls_cert=None,
                 tls_key=None, tls_server_name=None, auth_token=None, retry=True):
        """TLS: tls_ca (CA bundle path; system roots if only other tls_* are
        given), tls_cert/tls_key (client certificate, mutual TLS),
        tls_server_name (expected certificate name). auth_token: sent as
        'authorization: Bearer <token>'. See attnserve.security.

        target may list replicas ("ipv4:127.0.0.1:A,127.0.0.1:B") or name
        them ("dns:///svc:50051"): round_robin over all; retry=False turns
        off the UNAVAILABLE retries (attnserve/service_config.py)."""
        channel_options = [
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ] + service_config.channel_options(retry) + list(options or [])
        self._channel = security.make_channel(
            target, channel_options, credentials, tls_ca=tls_ca, tls_cert=tls_cert,
            tls_key=tls_key, tls_server_name=tls_server_name, auth_token=auth_token)
        self._stub = attention_pb2_grpc.AttentionServiceStub(self._channel)
        self._health_check = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def build_request(query, key=None, value=None, causal=None, key_lengths=None,
                      attn_mask=None, return_attention_weights=False, model="demo",
                      version=0, dtype=np.float32, output_dtype=None, request_id=""):
        """Builds an attn.v1.AttendRequest from numpy arrays (see attend)."""
        request = attention_pb2.AttendRequest(
            model=model, version=version, request_id=request_id,
            return_attention_weights=return_attention_weights)
        request.query.CopyFrom(encode_tensor(query, dtype))
        if key is not None:
            request.key.CopyFrom(encode_tensor(key, dtype))
        if value is not None:
            request.value.CopyFrom(encode_tensor(value, dtype))
        if causal is not None:
            request.causal = bool(causal)
        if key_lengths is not None:
            request.key_lengths.extend(int(n) for n in key_lengths)
        if attn_mask is not None:
            mask = np.asarray(attn_mask)
            # Boolean masks go as BOOL; float masks as float32 (additive).
            request.attn_mask.CopyFrom(encode_tensor(mask, np.float32))
        if output_dtype is not None:
            request.output_dtype = wire_dtype(output_dtype)
        return request

    def attend(self, query, key=None, value=None, causal=None, key_lengths=None,
               attn_mask=None, return_attention_weights=False, model="demo",
               version=0, timeout=None, dtype=np.float32, output_dtype=None,
               request_id=""):
        """Runs multi-head attention on the server.

        query: [B, Sq, d_model] or [Sq, d_model]; key/value: [B, Sk, d_model]
        (default: query). causal: None = the model's default. key_lengths: one
        int per batch item. attn_mask: [Sq, Sk] or [B, Sq, Sk], bool (True =
        masked, as nn.MultiheadAttention) or float (added to the scores).
        dtype: wire dtype of query/key/value (np.float32, np.float16 or
        "bfloat16"). timeout: seconds. Returns an AttendResult with float32
        numpy arrays. Raises grpc.RpcError on error.
        """
        request = self.build_request(
            query, key=key, value=value, causal=causal, key_lengths=key_lengths,
            attn_mask=attn_mask, return_attention_weights=return_attention_weights,
            model=model, version=version, dtype=dtype, output_dtype=output_dtype,
            request_id=request_id)
        return _result(self._stub.Attend(request, timeout=timeout))

    def attend_stream(self, requests, timeout=None, raise_errors=True):
        """Sends many requests on one AttendStream call; yields results in order.

        requests: an iterable of dicts of attend() keyword arguments (without
        timeout) or of attn.v1.AttendRequest messages. A failed request raises
        AttendError (a grpc.RpcError) when raise_errors, else the AttendError
        is yielded in its place and the stream goes on.
        """
        def messages():
            for item in requests:
                if isinstance(item, attention_pb2.AttendRequest):
                    yield item
                else:
                    yield self.build_request(**item)

        for response in self._stub.AttendStream(messages(), timeout=timeout):
            if response.HasField("error") and response.error.code != 0:
                error = AttendError(_status_code(response.error.code),
                                    response.error.message, response.request_id)
                if raise_errors:
                    raise error
                yield error
            else:
                yield _result(response.response)

    # -- sessions (stateful decoding with a server-side KV cache) -------------

    @staticmethod
    def build_step_request(session_id, tokens, position, start=False, model="demo",
                           version=0, dtype=np.float32, output_dtype=None,
                           request_id=""):
        """An AttendRequest for one session step (see step); position is
        always set, so that a retried step is refused instead of applied
        twice."""
        request = Client.build_request(tokens, model=model, version=version, dtype=dtype,
                                       output_dtype=output_dtype, request_id=request_id)
        request.session_id = session_id
        request.session_start = bool(start)
        request.session_position = int(position)
        return request

    def start_session(self, session_id, prefix, model="demo", version=0, timeout=None,
                      dtype=np.float32, output_dtype=None):
        """Starts session `session_id` with its prefix ([S, d_model] or
        [1, S, d_model]): causal self-attention over the prefix, whose K/V
        the server keeps. Returns an AttendResult (session_length == S).
        ALREADY_EXISTS if the id is live."""
        return self.step(session_id, prefix, 0, start=True, model=model, version=version,
                         timeout=timeout, dtype=dtype, output_dtype=output_dtype)

    def step(self, session_id, tokens, position, start=False, model="demo", version=0,
             timeout=None, dtype=np.float32, output_dtype=None):
        """Appends `tokens` ([S, d_model] or [1, S, d_model], usually one
        token) at `position` (the session's length, i.e. the previous
        result's session_length) and returns their attention over every
        cached token. Errors (grpc.RpcError): NOT_FOUND (ended, expired or
        evicted: start again with the full prefix), FAILED_PRECONDITION
        (position is not the session's length; the message has both)."""
        request = self.build_step_request(session_id, tokens, position, start=start,
                                          model=model, version=version, dtype=dtype,
                                          output_dtype=output_dtype)
        return _result(self._stub.Attend(request, timeout=timeout))

    def end_session(self, session_id, model="demo", version=0, timeout=None):
        """Ends a session and frees its KV cache; returns its length.
        NOT_FOUND if it is not live."""
        response = self._stub.EndSession(
            attention_pb2.EndSessionRequest(model=model, version=version,
                                            session_id=session_id), timeout=timeout)
        return response.session_length

    def list_models(self, timeout=None):
        """Returns the list of attn.v1.ModelInfo of every loaded model version."""
        return list(self._stub.ListModels(attention_pb2.ListModelsRequest(),
                                          timeout=timeout).models)

    def get_model(self, model="demo", version=0, timeout=None):
        """Returns the attn.v1.ModelInfo of one model (version 0 = newest)."""
        return self._stub.GetModel(
            attention_pb2.GetModelRequest(model=model, version=version), timeout=timeout)

    def health(self, service="", timeout=None):
        """grpc.health.v1 Check; returns the status name, e.g. "SERVING"."""
        response = self._health_check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_ready(self, timeout=10.0):
        """Blocks until the channel is connected; raises grpc.FutureTimeoutError."""
        grpc.channel_ready_future(self._channel).result(timeout=timeout)
