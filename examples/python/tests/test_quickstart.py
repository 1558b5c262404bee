"""The Python quickstart against real Envelope servers on loopback."""

import io
import os
import pathlib
import re
import socket
import subprocess
import sys

import grpc
import pytest

from conftest import HERE, INDEX, Server
from envelope_client import connect, decrypt_file, encrypt_file, envelope_stub
from envelope.v1 import envelope_pb2 as pb


def readme_code() -> str:
    text = (HERE / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "README.md holds one python block: the quickstart"
    return blocks[0]


def test_the_readme_quickstart_runs_as_written(server, tmp_path):
    script = tmp_path / "quickstart.py"
    script.write_text(readme_code())
    env = dict(os.environ, ENVELOPE_ADDR=server.addr,
               PYTHONPATH=os.pathsep.join([str(HERE / "gen"), str(HERE)]))
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for step in ("record:", "batch: 100 records", "column: 1000 rows", "index: token", "file:"):
        assert step in out.stdout, out.stdout
    assert server.audit("GenerateDataKey") and server.audit("UnwrapDataKey")


def test_a_changed_file_is_refused(server):
    stub = envelope_stub(connect(server.addr))
    data = os.urandom((1 << 20) + 100)
    stored = io.BytesIO()
    encrypt_file(stub, "default", {"file": "a"}, io.BytesIO(data), stored)
    blob = stored.getvalue()
    flipped = bytearray(blob)
    flipped[-5] ^= 1
    # Without the last chunk (the first one is then taken for a middle one).
    first_len = int.from_bytes(blob[4 + 2 + (blob[4] << 8 | blob[5]) + 8:][:4], "big")
    cut = blob[: 4 + 2 + (blob[4] << 8 | blob[5]) + 8 + 4 + first_len]
    from cryptography.exceptions import InvalidTag
    with pytest.raises(InvalidTag):
        decrypt_file(stub, "default", {"file": "a"}, io.BytesIO(bytes(flipped)), io.BytesIO())
    with pytest.raises(ValueError, match="cut short"):
        decrypt_file(stub, "default", {"file": "a"}, io.BytesIO(cut), io.BytesIO())
    # Another context: the server will not unwrap the data key.
    with pytest.raises(grpc.RpcError) as e:
        decrypt_file(stub, "default", {"file": "b"}, io.BytesIO(blob), io.BytesIO())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_tampered_record_is_not_retried(server):
    stub = envelope_stub(connect(server.addr))
    sealed = stub.Encrypt(pb.EncryptRequest(plaintext=b"x", context={"a": "b"})).ciphertext
    with pytest.raises(grpc.RpcError) as e:
        stub.Decrypt(pb.DecryptRequest(ciphertext=sealed[:-1] + bytes([sealed[-1] ^ 1]), context={"a": "b"}))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(server.audit("Decrypt")) == 1, "INVALID_ARGUMENT is an answer: sent once"


def test_the_service_config_is_what_clients_md_says():
    """docs/CLIENTS.md, "Deadlines" and "Retries": 2 s for unary calls, 30 s for
    batches and columns, an hour for streams, 60 s for Admin, set per call (no
    timeout in the service config: grpcio starts those early); UNAVAILABLE
    alone retried, 4 attempts, 50 ms doubling to 1 s, streams and Admin never;
    round robin over the addresses."""
    from envelope_client import SERVICE_CONFIG, deadline_for
    assert SERVICE_CONFIG["loadBalancingConfig"] == [{"round_robin": {}}]
    retries = {}
    for mc in SERVICE_CONFIG["methodConfig"]:
        assert "timeout" not in mc, mc
        for name in mc["name"]:
            retries[(name["service"], name.get("method", ""))] = mc.get("retryPolicy")
    env = "/envelope.v1.Envelope/"
    for m in ("Encrypt", "Decrypt", "Rewrap", "GenerateDataKey", "UnwrapDataKey", "ComputeIndex"):
        assert deadline_for(env + m) == 2.0, m
    for m in ("EncryptBatch", "DecryptBatch", "EncryptColumn", "DecryptColumn", "RewrapBatch",
              "ReencryptBatch", "ReencryptColumn"):
        assert deadline_for(env + m) == 30.0, m
    for m in ("EncryptStream", "DecryptStream", "EncryptColumnStream", "DecryptColumnStream"):
        assert deadline_for(env + m) == 3600.0, m
        assert retries[("envelope.v1.Envelope", m)] is None, m
    assert deadline_for("/envelope.v1.Admin/RotateMasterKey") == 60.0
    assert deadline_for("/grpc.health.v1.Health/Check") is None
    assert ("envelope.v1.Admin", "") not in retries
    assert retries[("envelope.v1.Envelope", "")] == {
        "maxAttempts": 4,
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }


def test_a_unary_call_gets_its_whole_2s_deadline(server):
    """The server is stopped (SIGSTOP): the call waits its deadline, all of
    it, then ends DEADLINE_EXCEEDED. (With the timeout in the service config,
    grpcio ended it 1 to 2 s early.)"""
    import signal
    import time
    stub = envelope_stub(connect(server.addr))
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            stub.Encrypt(pb.EncryptRequest(plaintext=b"x"))
        waited = time.monotonic() - start
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 1.95 <= waited < 30, waited
    # A timeout the caller gives wins.
    stub.Encrypt(pb.EncryptRequest(plaintext=b"x"), timeout=20)


def test_unavailable_is_retried_four_times(tmp_path):
    """An audit log that cannot be written, with on_failure = "refuse": every
    Envelope call is UNAVAILABLE. The client makes 4 attempts (counted by the
    server's metrics), then gives up with UNAVAILABLE."""
    import time
    import urllib.request
    config = ('metrics_listen = "127.0.0.1:0"\n[audit]\noutput = "/dev/full"\n'
              'on_failure = "refuse"\n' + INDEX)
    s = Server(tmp_path, config=config)
    try:
        metrics = next(l.removeprefix("metrics on ").strip()
                       for l in s.out.read_text().splitlines() if l.startswith("metrics on "))

        def unavailable() -> int:
            body = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10).read().decode()
            return sum(int(float(l.rsplit(" ", 1)[1])) for l in body.splitlines()
                       if l.startswith("envelope_requests_total{") and 'rpc="Encrypt"' in l
                       and 'code="UNAVAILABLE"' in l)

        stub = envelope_stub(connect(s.addr))
        # The first call's line cannot be written: from then on, calls are refused.
        deadline = time.monotonic() + 20
        while True:
            try:
                stub.Encrypt(pb.EncryptRequest(plaintext=b"x"), timeout=5)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                break
            assert time.monotonic() < deadline, "calls went on with an unwritable audit log"
            time.sleep(0.05)
        for _ in range(3):
            before = unavailable()
            with pytest.raises(grpc.RpcError) as e:
                stub.Encrypt(pb.EncryptRequest(plaintext=b"x"))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "audit log cannot be written" in e.value.details()
            assert unavailable() - before == 4
    finally:
        s.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_round_robin_spreads_calls_and_skips_a_dead_replica(tmp_path):
    a, b = Server(tmp_path, name="a"), Server(tmp_path, name="b")
    try:
        dead = f"127.0.0.1:{free_port()}"
        target = "ipv4:" + ",".join([a.addr, dead, b.addr])
        stub = envelope_stub(connect(target, authority="envelope"))
        # Until both replicas are connected, round-robin uses the one that is.
        for i in range(20):
            stub.Encrypt(pb.EncryptRequest(plaintext=b"warm-up"))
        before = (len(a.audit("Encrypt")), len(b.audit("Encrypt")))
        for i in range(40):
            stub.Encrypt(pb.EncryptRequest(plaintext=b"%d" % i))
        seen = (len(a.audit("Encrypt")) - before[0], len(b.audit("Encrypt")) - before[1])
        assert sum(seen) == 40 and min(seen) >= 10, seen
    finally:
        a.stop()
        b.stop()


def test_mtls_identity_meets_the_policy(tmp_path):
    from pki import issue_pki
    pki = issue_pki(tmp_path)
    policy = tmp_path / "policy.toml"
    policy.write_text('[[allow]]\ncallers = ["py-client"]\nkeys = ["*"]\noperations = ["encrypt", "decrypt"]\n')
    config = (f'policy_file = "{policy}"\n[tls]\ncert = "{pki["server.crt"]}"\nkey = "{pki["server.key"]}"\n'
              f'client_ca = "{pki["ca.crt"]}"\n' + INDEX)
    s = Server(tmp_path, config=config)
    try:
        read = lambda n: pathlib.Path(pki[n]).read_bytes()
        channel = connect(s.addr, ca=read("ca.crt"), cert=read("client.crt"), key=read("client.key"),
                          server_name="localhost")
        # Connected before the first call's 2 s deadline starts: now and then
        # (about 1 run in 15 here) the first TLS handshake to a fresh server
        # stalls until the server's 5 s handshake timeout closes it and the
        # client reconnects. Noted in the session note; not understood yet.
        grpc.channel_ready_future(channel).result(timeout=20)
        stub = envelope_stub(channel)
        sealed = stub.Encrypt(pb.EncryptRequest(plaintext=b"over mTLS"))
        assert stub.Decrypt(pb.DecryptRequest(ciphertext=sealed.ciphertext)).plaintext == b"over mTLS"
        assert s.audit("Encrypt")[0]["caller"] == "py-client"
        # TLS without a client certificate: no identity, no grant.
        anonymous = envelope_stub(connect(s.addr, ca=read("ca.crt"), server_name="localhost"))
        with pytest.raises(grpc.RpcError) as e:
            anonymous.Encrypt(pb.EncryptRequest(plaintext=b"x"))
        # The handshake fails (certificate required); the client retries it as
        # UNAVAILABLE until its deadline, so either code may end the call.
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert len(s.audit("Encrypt")) == 1, "the server served none of the anonymous attempts"
    finally:
        s.stop()


def test_the_file_format_matches_the_shared_vector():
    import json
    from envelope_client import read_chunks, write_chunks
    v = json.loads((HERE.parent / "file-format-vector.json").read_text(encoding="utf-8"))
    key, prefix = bytes.fromhex(v["key"]), bytes.fromhex(v["prefix"])
    out = io.BytesIO()
    write_chunks(key, prefix, v["context"], io.BytesIO(bytes.fromhex(v["plaintext"])), out, chunk=v["chunk"])
    assert out.getvalue().hex() == v["sealed"]
    back = io.BytesIO()
    read_chunks(key, prefix, v["context"], io.BytesIO(bytes.fromhex(v["sealed"])), back)
    assert back.getvalue().hex() == v["plaintext"]


def test_an_address_list_needs_an_authority(server):
    """docs/CLIENTS.md, "Load balancing": a target that lists addresses has
    the list as its default authority, which the server's HTTP/2 layer
    refuses as malformed (a stream reset: INTERNAL); with an authority the
    same target is served."""
    target = f"ipv4:{server.addr},{server.addr}"
    with pytest.raises(grpc.RpcError) as e:
        envelope_stub(connect(target)).Encrypt(pb.EncryptRequest(plaintext=b"x"))
    assert e.value.code() == grpc.StatusCode.INTERNAL, e.value
    envelope_stub(connect(target, authority="envelope")).Encrypt(pb.EncryptRequest(plaintext=b"x"))
