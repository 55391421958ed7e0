"""Channel security of attnserve.Client: TLS, mutual TLS, the expected server
name and a bearer token (sent as ``authorization: Bearer <token>`` on every
call, health checks included).

The keyword names match the C++ client and the command-line tools:
``tls_ca``, ``tls_cert``, ``tls_key`` (paths of PEM files),
``tls_server_name`` and ``auth_token`` (the token itself).
"""
import collections

import grpc


def _read(flag, path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{flag}={path}: cannot read ({e.strerror})") from None


def uses_tls(tls_ca=None, tls_cert=None, tls_key=None, tls_server_name=None):
    """TLS is on when any tls_* argument is given."""
    return any((tls_ca, tls_cert, tls_key, tls_server_name))


def channel_credentials(tls_ca=None, tls_cert=None, tls_key=None):
    """grpc.ChannelCredentials for TLS (system roots when tls_ca is None).

    Raises ValueError naming the argument when a file cannot be read, or only
    one of tls_cert/tls_key is given.
    """
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("tls_cert and tls_key go together: give both (mutual TLS) "
                         "or neither")
    root = _read("tls_ca", tls_ca) if tls_ca else None
    cert = _read("tls_cert", tls_cert) if tls_cert else None
    key = _read("tls_key", tls_key) if tls_key else None
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                        certificate_chain=cert)


class _CallDetails(
        collections.namedtuple(
            "_CallDetails",
            ["method", "timeout", "metadata", "credentials", "wait_for_ready",
             "compression"]),
        grpc.ClientCallDetails):
    pass


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the authorization header to every call."""

    def __init__(self, token):
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, d):
        metadata = list(d.metadata or []) + [self._header]
        return _CallDetails(d.method, d.timeout, metadata, d.credentials,
                            getattr(d, "wait_for_ready", None),
                            getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def make_channel(target, options, credentials=None, tls_ca=None, tls_cert=None,
                 tls_key=None, tls_server_name=None, auth_token=None):
    """A grpc.Channel to `target` with `options` (a list of channel args).

    `credentials`, when given, replaces the tls_* arguments.
    """
    options = list(options)
    if credentials is None and uses_tls(tls_ca, tls_cert, tls_key, tls_server_name):
        credentials = channel_credentials(tls_ca, tls_cert, tls_key)
    if tls_server_name:
        options.append(("grpc.ssl_target_name_override", tls_server_name))
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    if auth_token:
        channel = grpc.intercept_channel(channel, _BearerToken(auth_token))
    return channel
