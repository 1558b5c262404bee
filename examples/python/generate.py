"""Generates the Python messages and stubs from ../../proto into ./gen.

Run once after checkout and after every change to the proto (the tests run
it first): python generate.py
"""

import pathlib
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO = HERE.parent.parent / "proto"


def main() -> None:
    out = HERE / "gen"
    out.mkdir(exist_ok=True)
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "envelope/v1/envelope.proto",
    ])
    if code != 0:
        sys.exit(f"protoc failed ({code})")
    # Packages, so that `envelope.v1.envelope_pb2` imports.
    for d in (out / "envelope", out / "envelope" / "v1"):
        (d / "__init__.py").touch()


if __name__ == "__main__":
    main()
