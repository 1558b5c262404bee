#!/usr/bin/env python3
"""Request bodies for benches/h2load.sh: gRPC frames (1 flag byte, 4-byte
length, the protobuf message) encoded by hand, so h2load needs no stubs.

Usage: h2load-bodies.py DIR [RECORDS]   RECORDS: the `envelope encrypt
--column --row-field row` output to build the DecryptColumn body from.
"""
import base64
import struct
import sys

N = 1000
VALUE = b"\x5a" * 64
SHARED = [("column", "email"), ("table", "users")]


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(tag, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(tag << 3 | 2) + varint(len(data)) + data


def frame(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def column(values, rows):
    """EncryptColumnRequest / DecryptColumnRequest: the same field numbers."""
    msg = b"".join(field(2, field(1, k) + field(2, v)) for k, v in SHARED)
    msg += b"".join(field(3, v) for v in values)
    msg += field(4, "row") + b"".join(field(5, r) for r in rows)
    return msg


def main():
    out = sys.argv[1]
    rows = [str(1_000_000 + i) for i in range(N)]
    bodies = {
        "empty.bin": b"",
        # EncryptRequest {plaintext = 2}
        "encrypt.bin": field(2, VALUE),
        # EncryptBatchRequest {items = 2: EncryptItem {plaintext = 1}}, no context
        "batch.bin": b"".join(field(2, field(1, VALUE)) for _ in range(N)),
        "column.bin": column([VALUE] * N, rows),
    }
    if len(sys.argv) > 2:
        lines = open(sys.argv[2]).read().splitlines()
        pairs = [l.split("\t", 1) for l in lines]
        bodies["decrypt-column.bin"] = column(
            [base64.b64decode(r) for _, r in pairs], [row for row, _ in pairs]
        )
    for name, msg in bodies.items():
        open(f"{out}/{name}", "wb").write(frame(msg))
    if len(sys.argv) == 2:
        # The CLI's input for the records DecryptColumn opens.
        with open(f"{out}/column-input.txt", "w") as f:
            for r in rows:
                f.write(f"{r}\t{VALUE.decode()}\n")


main()
