"""What every Python caller of Envelope needs: a channel with mTLS, a gRPC
service config (retries of UNAVAILABLE only, round-robin over the
replicas), a deadline on every call, and the client-side data-key pattern for
large files. Stubs come from generate.py (./gen).

docs/CLIENTS.md explains the choices.
"""

import collections
import json
import os
import struct
from typing import BinaryIO, Mapping, Optional

import grpc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from envelope.v1 import envelope_pb2 as pb
from envelope.v1 import envelope_pb2_grpc as rpc

# Retries for UNAVAILABLE only: a replica that is down or draining.
# INVALID_ARGUMENT (a tampered record, a wrong context), PERMISSION_DENIED and
# FAILED_PRECONDITION are answers, not accidents, and are never retried.
# Retrying an Encrypt that may have run is harmless: it makes a second record
# that nobody stores.
_RETRY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
_ENVELOPE = "envelope.v1.Envelope"
_BATCHES = ("EncryptBatch", "DecryptBatch", "EncryptColumn", "DecryptColumn",
            "RewrapBatch", "ReencryptBatch", "ReencryptColumn")
_STREAMS = ("EncryptStream", "DecryptStream", "EncryptColumnStream", "DecryptColumnStream")
SERVICE_CONFIG = {
    # Spread calls over every address the name resolves to (the pods of a
    # headless Kubernetes Service): gRPC otherwise keeps one connection.
    "loadBalancingConfig": [{"round_robin": {}}],
    # No "timeout" here: grpcio (1.85.1 and earlier) starts a service
    # config's timeout 1 to 2 s early (grpc/grpc#34547), so a 2 s timeout
    # could end a call after 0.1 s. Deadlines are set per call, below.
    "methodConfig": [
        {"name": [{"service": _ENVELOPE}], "retryPolicy": _RETRY},
        # Streams: no retry (a stream that broke midway is resent by the
        # application, from its last answer).
        {"name": [{"service": _ENVELOPE, "method": m} for m in _STREAMS]},
    ],
}

# Seconds from the start of a call to its deadline, by service and method
# ("" for the service's other methods): a unary call, a batch or column,
# a stream, an Admin call.
DEADLINES = {
    (_ENVELOPE, ""): 2.0,
    **{(_ENVELOPE, m): 30.0 for m in _BATCHES},
    **{(_ENVELOPE, m): 3600.0 for m in _STREAMS},
    ("envelope.v1.Admin", ""): 60.0,
}


def deadline_for(method: str) -> Optional[float]:
    """The timeout DEADLINES gives a full method name
    ("/envelope.v1.Envelope/Encrypt"), or None (health, reflection)."""
    service, _, name = method.lstrip("/").partition("/")
    return DEADLINES.get((service, name), DEADLINES.get((service, "")))


class _Call(collections.namedtuple("_Call", ("method", "timeout", "metadata", "credentials",
                                               "wait_for_ready", "compression")),
            grpc.ClientCallDetails):
    pass


class _Deadlines(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                 grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Gives each call its DEADLINES timeout unless the caller set one."""

    @staticmethod
    def _details(d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        if d.timeout is not None:
            return d
        method = d.method.decode() if isinstance(d.method, bytes) else d.method
        return _Call(d.method, deadline_for(method), d.metadata, d.credentials,
                     getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


# A headless Service's name, for example:
KUBERNETES_TARGET = "dns:///envelope-headless.envelope.svc.cluster.local:50051"


def connect(
    target: str,
    *,
    ca: Optional[bytes] = None,
    cert: Optional[bytes] = None,
    key: Optional[bytes] = None,
    server_name: Optional[str] = None,
    authority: Optional[str] = None,
) -> grpc.Channel:
    """A channel to `target` ("host:port", or "dns:///name:port" for every
    replica behind a name). With `ca`, TLS; with `cert` and `key` too, mTLS:
    the certificate's SPIFFE URI (or CN) is the identity the server's policy
    grants. `authority` names the service in each call's :authority header:
    needed for a target that lists addresses ("ipv4:a:1,b:2"), whose default
    authority (the list, commas and all) the server refuses as malformed.
    Each call gets its DEADLINES timeout unless it passes `timeout=`."""
    options = [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        # Records may be up to 4 MiB; batches and columns larger.
        ("grpc.max_receive_message_length", 64 << 20),
    ]
    if authority:
        options.append(("grpc.default_authority", authority))
    if ca is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                             certificate_chain=cert)
        channel = grpc.secure_channel(target, creds, options=options)
    return grpc.intercept_channel(channel, _Deadlines())


def envelope_stub(channel: grpc.Channel) -> rpc.EnvelopeStub:
    """The Envelope service on `channel`."""
    return rpc.EnvelopeStub(channel)


# Large files: one GenerateDataKey, then AES-256-GCM here, chunk by chunk;
# only the wrapped key is stored with the file. The format is this example's
# own, shared with the TypeScript quickstart (examples/file-format-vector.json
# pins it for both): a magic, the wrapped key, an 8-byte random nonce prefix,
# then chunks, each sealed with the nonce (prefix, chunk number) and, as
# associated data, its number, a last-chunk flag and the context, so chunks
# cannot be reordered, dropped, cut short or moved to another context.
MAGIC = b"EQS1"
CHUNK = 1 << 20


def _aad(context: Mapping[str, str], n: int, last: bool) -> bytes:
    """MAGIC, n (u32), last (u8), then each entry sorted by the UTF-8 bytes of
    its key: key and value, each a u32 length and its UTF-8 bytes."""
    out = [MAGIC, struct.pack(">IB", n, last)]
    for k, v in sorted((k.encode(), v.encode()) for k, v in context.items()):
        out += [struct.pack(">I", len(k)), k, struct.pack(">I", len(v)), v]
    return b"".join(out)


def write_chunks(data_key: bytes, prefix: bytes, context: Mapping[str, str], src: BinaryIO,
                 dst: BinaryIO, chunk: int = CHUNK) -> None:
    """Seals `src` chunk by chunk into `dst` (the body of the file format)."""
    aead = AESGCM(data_key)
    n = 0
    part = src.read(chunk)
    while True:
        following = src.read(chunk)
        last = not following
        sealed = aead.encrypt(prefix + struct.pack(">I", n), part, _aad(context, n, last))
        dst.write(struct.pack(">I", len(sealed)) + sealed)
        if last:
            return
        part, n = following, n + 1


def read_chunks(data_key: bytes, prefix: bytes, context: Mapping[str, str], src: BinaryIO,
                dst: BinaryIO) -> None:
    """Opens what write_chunks wrote. Chunks are written to `dst` as they
    open: on any exception, discard everything written to `dst`."""
    aead = AESGCM(data_key)
    n = 0
    while True:
        head = src.read(4)
        if len(head) != 4:
            raise ValueError("the file is cut short")
        (length,) = struct.unpack(">I", head)
        sealed = src.read(length)
        nonce = prefix + struct.pack(">I", n)
        try:
            dst.write(aead.decrypt(nonce, sealed, _aad(context, n, False)))
        except InvalidTag:
            # Not a middle chunk: it must be the last one (or it was changed).
            dst.write(aead.decrypt(nonce, sealed, _aad(context, n, True)))
            if src.read(1):
                raise ValueError("data after the last chunk")
            return
        n += 1


def encrypt_file(stub: rpc.EnvelopeStub, key: str, context: Mapping[str, str],
                 src: BinaryIO, dst: BinaryIO) -> str:
    """Encrypts `src` into `dst` under a fresh data key; returns its
    master-key version. (Python cannot wipe the key's bytes: they go when
    the response is collected.)"""
    dk = stub.GenerateDataKey(pb.GenerateDataKeyRequest(key=key, context=context))
    prefix = os.urandom(8)
    dst.write(MAGIC + struct.pack(">H", len(dk.wrapped_key)) + dk.wrapped_key + prefix)
    write_chunks(dk.plaintext_key, prefix, context, src, dst)
    return dk.key_version


def decrypt_file(stub: rpc.EnvelopeStub, key: str, context: Mapping[str, str],
                 src: BinaryIO, dst: BinaryIO) -> None:
    """Decrypts what encrypt_file wrote; raises on any change to it, and then
    whatever was written to `dst` must be discarded."""
    if src.read(4) != MAGIC:
        raise ValueError("not an encrypted file")
    (size,) = struct.unpack(">H", src.read(2))
    wrapped = src.read(size)
    prefix = src.read(8)
    dk = stub.UnwrapDataKey(pb.UnwrapDataKeyRequest(key=key, wrapped_key=wrapped, context=context))
    read_chunks(dk.plaintext_key, prefix, context, src, dst)
