"""The gRPC service config of attnserve clients (same as the C++ client's
client/service_config.cc): round_robin over every address a target resolves
to ("ipv4:A,B,C", "dns:///name"), and retries of calls that fail with
UNAVAILABLE (a replica going away), on by default since Attend is idempotent.
"""
import json

MAX_CALL_ATTEMPTS = 5


def service_config_json(retry=True):
    config = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retry:
        config["methodConfig"] = [{
            "name": [{"service": "attn.v1.AttentionService"},
                     {"service": "grpc.health.v1.Health"}],
            "retryPolicy": {
                "maxAttempts": MAX_CALL_ATTEMPTS,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }]
        # Same throttling as the C++ client: no retry storm under overload.
        config["retryThrottling"] = {"maxTokens": 100, "tokenRatio": 0.1}
    return json.dumps(config)


def channel_options(retry=True):
    """gRPC channel options carrying that service config."""
    return [("grpc.service_config", service_config_json(retry)),
            ("grpc.enable_retries", 1 if retry else 0)]
