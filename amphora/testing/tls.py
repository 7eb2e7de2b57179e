"""A test certificate authority with server and client certificates, made with the openssl command."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from gevent import subprocess


@dataclass(frozen=True)
class TLSCertificates:
    """PEM files of a test CA, a server certificate for ``localhost`` and a client certificate."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_certificates(directory: str, days: int = 30) -> TLSCertificates:
    """Generate, with the ``openssl`` command, a CA and the server and client certificates it signs.

    The server certificate is for ``localhost`` and ``127.0.0.1``; keys are unencrypted. Each call makes a
    new CA, which trusts none of the certificates of another call.
    """
    os.makedirs(directory, exist_ok=True)

    def path(name: str) -> str:
        return os.path.join(directory, name)

    def openssl(*arguments: str) -> None:
        result = subprocess.run(["openssl", *arguments], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"openssl {arguments[0]} failed: {result.stderr.strip()}")

    config = path("openssl.cnf")
    with open(config, "w") as config_file:
        config_file.write(_OPENSSL_CONFIG)
    # fmt: off
    new_key = ("-nodes", "-newkey", "rsa:2048", "-config", config)
    validity = ("-days", str(days))
    openssl("req", "-x509", *new_key, *validity, "-extensions", "ca", "-subj", "/CN=amphora test CA",
            "-keyout", path("ca.key"), "-out", path("ca.pem"))
    for role, common_name in (("server", "localhost"), ("client", "amphora test client")):
        openssl("req", "-new", *new_key, "-subj", f"/CN={common_name}",
                "-keyout", path(f"{role}.key"), "-out", path(f"{role}.csr"))
        openssl("x509", "-req", "-in", path(f"{role}.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
                "-set_serial", str(uuid.uuid4().int >> 65), *validity,
                "-extfile", config, "-extensions", role, "-out", path(f"{role}.pem"))
    # fmt: on
    return TLSCertificates(
        ca=path("ca.pem"),
        server_cert=path("server.pem"),
        server_key=path("server.key"),
        client_cert=path("client.pem"),
        client_key=path("client.key"),
    )
