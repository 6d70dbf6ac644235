"""A throwaway certificate authority and a server certificate for 127.0.0.1, made with openssl."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _openssl(*args: str | Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl is not installed; scripts/test installs it with apt-get")
    subprocess.run([binary, *map(str, args)], check=True, capture_output=True)


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA (valid two days) and a certificate it signed for 127.0.0.1 and localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    ec_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec_key, "-keyout", directory / "ca.key", "-out", files.ca_cert,
        "-days", "2", "-subj", "/CN=progress-gateway test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        "req", *ec_key, "-keyout", files.server_key, "-out", directory / "server.csr",
        "-subj", "/CN=localhost",
    )  # fmt: skip
    (directory / "server.ext").write_text(SERVER_EXTENSIONS)
    _openssl(
        "x509", "-req", "-in", directory / "server.csr", "-CA", files.ca_cert,
        "-CAkey", directory / "ca.key", "-CAcreateserial", "-out", files.server_cert,
        "-days", "2", "-extfile", directory / "server.ext",
    )  # fmt: skip
    return files
