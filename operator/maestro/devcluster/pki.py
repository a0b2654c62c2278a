"""PKI for the local control plane: one CA, the apiserver serving cert, an admin client cert
in `system:masters`, and the service-account signing key pair.

Generated once per state dir and reused across restarts, so kubeconfigs handed out earlier stay
valid for as long as the state dir lives.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True)
class PKI:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_crt(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def complete(self) -> bool:
        files = (
            self.ca_crt,
            self.ca_key,
            self.apiserver_crt,
            self.apiserver_key,
            self.admin_crt,
            self.admin_key,
            self.sa_key,
            self.sa_pub,
        )
        return all(p.exists() for p in files)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _apiserver_ips(pki: PKI) -> set[str]:
    cert = x509.load_pem_x509_certificate(pki.apiserver_crt.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}


def _load_ca(pki: PKI) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    return x509.load_pem_x509_certificate(pki.ca_crt.read_bytes()), ca_key


def ensure_pki(directory: Path, service_ip: str = "10.96.0.1", extra_ips: tuple[str, ...] = ()) -> PKI:
    """Create the PKI in `directory` unless a complete one is already there. `extra_ips` are more
    addresses the API server is reached at (the node's, for pods); a serving cert that lacks one is
    reissued, everything else is kept."""
    pki = PKI(directory)
    if pki.complete():
        if set(extra_ips) <= _apiserver_ips(pki):
            return pki
        ca, ca_key = _load_ca(pki)
        _write_apiserver_cert(pki, ca.subject, ca_key, service_ip, extra_ips)
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("maestro-dev-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    pki.ca_crt.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.ca_key, ca_key)
    _write_apiserver_cert(pki, ca_name, ca_key, service_ip, extra_ips)

    adm_key = _key()
    adm = _cert(_name("maestro-admin", "system:masters"), adm_key, ca_name, ca_key)
    pki.admin_crt.write_bytes(adm.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.admin_key, adm_key)

    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa)
    pki.sa_pub.write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def _write_apiserver_cert(
    pki: PKI,
    ca_name: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    service_ip: str,
    extra_ips: tuple[str, ...],
) -> None:
    srv_key = _key()
    sans: list[x509.GeneralName] = [
        x509.DNSName(n)
        for n in (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    ips = dict.fromkeys(("127.0.0.1", "::1", service_ip, *extra_ips))
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    srv = _cert(_name("kube-apiserver"), srv_key, ca_name, ca_key, sans=sans, server=True)
    pki.apiserver_crt.write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.apiserver_key, srv_key)


def issue_client_cert(pki: PKI, out_dir: Path, user: str, groups: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A client cert for `user` (a node component's identity, or a non-admin user to test RBAC)."""
    ca, ca_key = _load_ca(pki)
    key = _key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    cert = _cert(x509.Name(attrs), key, ca.subject, ca_key)
    out_dir.mkdir(parents=True, exist_ok=True)
    crt_p, key_p = out_dir / f"{_file_name(user)}.crt", out_dir / f"{_file_name(user)}.key"
    crt_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_p, key)
    return crt_p, key_p


def _file_name(user: str) -> str:
    return user.replace(":", "-")


def issue_serving_cert(
    pki: PKI, out_dir: Path, name: str, cn: str, *, ips: tuple[str, ...], dns: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """A serving cert signed by the cluster CA (the kubelet's, so the API server can verify it)."""
    ca, ca_key = _load_ca(pki)
    key = _key()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = _cert(_name(cn), key, ca.subject, ca_key, sans=sans, server=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    crt_p, key_p = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    crt_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_p, key)
    return crt_p, key_p
