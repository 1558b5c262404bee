"""Peers of Envelope, measured in-process on one core on the same records:
Tink (AEAD AES256_GCM) and the AWS Encryption SDK for Python (raw AES
keyring behind a caching materials manager, so data keys are reused as
Envelope reuses them). Prints records/s per size as a Markdown table.

Run (benches/peers/run.sh installs the packages into a virtualenv):
    python benches/peers/peers.py [seconds-per-case]
"""
import os
import sys
import time

import aws_encryption_sdk
import tink
from aws_encryption_sdk.identifiers import Algorithm, CommitmentPolicy, WrappingAlgorithm
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider
from aws_encryption_sdk.identifiers import EncryptionKeyType
from tink import aead

SIZES = [16, 64, 256, 4096]
CONTEXT = {"table": "users", "column": "cpf"}


def rate(fn, secs):
    n = 0
    deadline = time.perf_counter() + secs
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(100):
            fn()
        n += 100
    return n / (time.perf_counter() - start)


class StaticProvider(RawMasterKeyProvider):
    """A raw AES-256 wrapping key (the "raw AES keyring" of the Python SDK)."""

    provider_id = "envelope-bench"

    def __init__(self, **kwargs):  # pylint: disable=unused-argument
        self._key = os.urandom(32)

    def _get_raw_key(self, key_id):
        return WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=self._key,
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        )


def main():
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    aead.register()
    handle = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)
    tink_aead = handle.primitive(aead.Aead)
    aad = b"table=users;column=cpf"

    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    provider = StaticProvider()
    provider.add_master_key(b"bench-key")
    cache = aws_encryption_sdk.LocalCryptoMaterialsCache(capacity=100)
    cmm = aws_encryption_sdk.CachingCryptoMaterialsManager(
        master_key_provider=provider, cache=cache, max_age=300.0, max_messages_encrypted=2**24
    )

    print("| peer (in-process, one core) | record | records/s |")
    print("|---|---:|---:|")
    for size in SIZES:
        pt = os.urandom(size)
        r = rate(lambda: tink_aead.encrypt(pt, aad), secs)
        print(f"| Tink AEAD AES256_GCM | {size} B | {r:,.0f} |")
    # The SDK's default suite signs every message (ECDSA P-384); Envelope does
    # not sign, so the unsigned committing suite is the like-for-like row.
    suites = [
        ("default suite, ECDSA-signed", None),
        ("AES_256_GCM_HKDF_SHA512_COMMIT_KEY, unsigned", Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY),
    ]
    for label, suite in suites:
        for size in SIZES:
            pt = os.urandom(size)
            extra = {} if suite is None else {"algorithm": suite}
            r = rate(
                lambda: client.encrypt(
                    source=pt, materials_manager=cmm, encryption_context=CONTEXT, frame_length=0, **extra
                ),
                secs,
            )
            print(f"| AWS Encryption SDK, caching CMM, {label} | {size} B | {r:,.0f} |")


if __name__ == "__main__":
    main()
