"""Key material of a federation: TLS for the SuperLink, mTLS for its Control API, and
each site's SuperNode authentication key pair.

Made in-process with `cryptography` (a Flower dependency), by the embedded runner for
each run and by the operator for each run of a FederatedTraining. No CA private key is
ever stored: each CA signs the one certificate it exists for and is discarded, so a
leaked Secret cannot mint new identities.

Two CAs on purpose: the server CA, which every SuperNode trusts, and the Control client
CA, which only the SuperLink's proxy trusts. No serving certificate can then pass as a
client of the Control API (key registration, run submission).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Loopback names the SuperLink's own certificate must carry: its SuperExec (and the
# ServerApp) dial 127.0.0.1 and verify it, and the pod's proxy verifies `localhost`.
LOOPBACK_NAMES = ("localhost", "127.0.0.1")
# A run lasts hours; its certificates are made for it, so a short life costs nothing.
DEFAULT_VALIDITY = dt.timedelta(days=30)
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertifiedKey:
    """A certificate, its private key and the CA certificate that signed it (PEM)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class SiteKeyPair:
    """A SuperNode's authentication key, in the OpenSSH formats Flower 1.42 reads
    (`--auth-supernode-private-key` loads the private key with load_ssh_private_key)."""

    private_openssh: bytes
    public_openssh: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _general_names(names: Iterable[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    common_name: str, names: Iterable[str], usage: x509.ObjectIdentifier, validity: dt.timedelta
) -> CertifiedKey:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{common_name} CA"))
        .issuer_name(_name(f"{common_name} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    general_names = _general_names(names)
    if general_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    encoding = serialization.Encoding.PEM
    return CertifiedKey(ca_cert.public_bytes(encoding), cert.public_bytes(encoding), _pem(key))


def server_certificate(names: Iterable[str], validity: dt.timedelta = DEFAULT_VALIDITY) -> CertifiedKey:
    """The SuperLink's certificate for `names` (plus loopback) and its CA."""
    all_names = list(dict.fromkeys([*names, *LOOPBACK_NAMES]))
    return _issue("health-risk superlink", all_names, ExtendedKeyUsageOID.SERVER_AUTH, validity)


def control_client_certificate(validity: dt.timedelta = DEFAULT_VALIDITY) -> CertifiedKey:
    """The Control API client certificate (the operator and its run submitter) and its CA."""
    return _issue("health-risk control client", (), ExtendedKeyUsageOID.CLIENT_AUTH, validity)


def site_key_pair() -> SiteKeyPair:
    """A fresh SuperNode key pair, on P-384 as Flower generates its own."""
    key = ec.generate_private_key(ec.SECP384R1())
    return SiteKeyPair(
        private_openssh=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
        public_openssh=key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
    )


def pem_public_key(openssh_public_key: bytes) -> bytes:
    """The PEM (SubjectPublicKeyInfo) form the Control API registers, from an OpenSSH
    public key; refuses keys the SuperLink would not accept (it checks NIST EC curves)."""
    try:
        key = serialization.load_ssh_public_key(openssh_public_key.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not an OpenSSH public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(
            f"SuperNode keys must be NIST EC keys (e.g. ecdsa-sha2-nistp384), not {type(key).__name__}"
        )
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
