"""Fixtures: the stubs generated from proto/, and real Envelope servers (the
binary at ENVELOPE_BIN) on loopback, each with its own data directory."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent.parent
REPO = HERE.parent.parent
INDEX = '[[keys]]\nname = "default"\n[[keys.indexes]]\nname = "email"\nnormalize = "email"\nbits = 32\n'


def _generate() -> None:
    subprocess.run([sys.executable, str(HERE / "generate.py")], check=True)


_generate()
sys.path[:0] = [str(HERE / "gen"), str(HERE)]


class Server:
    """A running `envelope serve`; its audit log is its stdout."""

    def __init__(self, tmp: pathlib.Path, config: str = INDEX, name: str = "server"):
        binary = os.environ.get("ENVELOPE_BIN") or str(
            pathlib.Path.home() / ".cache/envelope/target/debug/envelope")
        data = tmp / name
        data.mkdir(mode=0o700)
        cfg = tmp / f"{name}.toml"
        cfg.write_text(config)
        self.out = tmp / f"{name}.out"
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--config", str(cfg)],
            stdout=open(self.out, "wb"), stderr=open(tmp / f"{name}.log", "wb"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in self.out.read_text(errors="replace").splitlines():
                if line.startswith("listening on "):
                    self.addr = line.removeprefix("listening on ").strip()
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError((tmp / f"{name}.log").read_text(errors="replace"))

    def audit(self, rpc: str) -> list:
        """The audit lines of `rpc` written so far (the writer flushes every 10 ms)."""
        import json
        time.sleep(0.1)
        lines = self.out.read_text(errors="replace").splitlines()
        return [json.loads(l) for l in lines if l.startswith("{") and f'"rpc":"{rpc}"' in l]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.stop()
