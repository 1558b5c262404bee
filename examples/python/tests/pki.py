"""A test CA, a server certificate for localhost and 127.0.0.1, and a client
certificate with CN py-client, made at test time (nothing committed)."""

import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer, issuer_key, ca=False, sans=None, usage=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def issue_pki(dir: pathlib.Path) -> dict:
    """Writes the files; returns their paths by name."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(_name("quickstart CA"), ca_key, _name("quickstart CA"), ca_key, ca=True)
    out = {}

    def write(name, data):
        p = dir / name
        p.write_bytes(data)
        p.chmod(0o600)
        out[name] = str(p)

    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)
    key_pem = lambda k: k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    write("ca.crt", pem(ca))
    for name, cn, sans, usage in (
        ("server", "localhost", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
         ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", "py-client", None, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        k = ec.generate_private_key(ec.SECP256R1())
        write(f"{name}.crt", pem(_cert(_name(cn), k, ca.subject, ca_key, sans=sans, usage=usage)))
        write(f"{name}.key", key_pem(k))
    return out
