"""Where the Kubernetes API server is and how to authenticate: in-cluster config or a kubeconfig file.

In a pod nodewatch uses KUBERNETES_SERVICE_HOST/PORT, the service-account CA and the projected token,
which the kubelet rotates: the token file is read again when it changes, at least every minute, and
after the API server answers 401. Outside a cluster a kubeconfig file (current context) is read with
PyYAML, imported only then.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import ssl
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from nodewatch.clock import Clock, SystemClock

DEFAULT_SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_REREAD_SECONDS = 60.0


class KubeConfigError(Exception):
    """The API server's address or credentials cannot be worked out; the message says which file or setting."""


class TokenUnavailableError(Exception):
    """The bearer token file cannot be read right now."""


class BearerToken(Protocol):
    def value(self) -> str: ...

    def invalidate(self) -> None: ...


class StaticToken:
    """A token written into the kubeconfig itself."""

    def __init__(self, token: str) -> None:
        self._token = token

    def value(self) -> str:
        return self._token

    def invalidate(self) -> None:
        """Nothing to re-read: a static token stays what it is."""


class TokenFile:
    """A token file that may be rotated: re-read when its mtime or size changes, every minute, and on demand."""

    def __init__(self, path: Path, clock: Clock | None = None, reread_every: float = TOKEN_REREAD_SECONDS) -> None:
        self.path = path
        self._clock = clock or SystemClock()
        self._reread_every = reread_every
        self._token: str | None = None
        self._stamp: tuple[int, int] | None = None
        self._read_at = 0.0

    def value(self) -> str:
        try:
            stat = self.path.stat()
        except OSError as error:
            raise TokenUnavailableError(
                f"cannot read the API token file {self.path}: {error.strerror or error}; "
                "check the service-account token volume (or the kubeconfig tokenFile)"
            ) from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        now = self._clock.monotonic()
        if self._token is None or stamp != self._stamp or now - self._read_at >= self._reread_every:
            try:
                token = self.path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                raise TokenUnavailableError(f"cannot read the API token file {self.path}: {error}") from None
            if not token:
                raise TokenUnavailableError(f"the API token file {self.path} is empty")
            self._token, self._stamp, self._read_at = token, stamp, now
        return self._token

    def invalidate(self) -> None:
        self._token = None


@dataclasses.dataclass(frozen=True)
class KubeConnection:
    """Everything needed to talk to one API server."""

    scheme: str
    host: str
    port: int
    base_path: str
    ssl_context: ssl.SSLContext | None
    token: BearerToken | None
    description: str

    @property
    def server(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}"


def _parse_server(server: str, where: str) -> tuple[str, str, int, str]:
    parsed = urllib.parse.urlsplit(server)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise KubeConfigError(f"{where}: API server address {server!r} is not an http(s)://HOST[:PORT] URL")
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise KubeConfigError(f"{where}: API server address {server!r} has an invalid port") from None
    return parsed.scheme, parsed.hostname, port, parsed.path.rstrip("/")


def _tls_context(
    where: str,
    *,
    ca_file: Path | None = None,
    ca_data: str | None = None,
    insecure: bool = False,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> ssl.SSLContext:
    try:
        if insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif ca_file is not None or ca_data is not None:
            context = ssl.create_default_context(
                cafile=None if ca_file is None else str(ca_file),
                cadata=ca_data,
            )
        else:
            context = ssl.create_default_context()
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), None if key_file is None else str(key_file))
        elif cert_pem is not None:
            _load_cert_chain_from_memory(context, cert_pem, key_pem)
    except (OSError, ssl.SSLError, ValueError) as error:
        raise KubeConfigError(f"{where}: cannot set up TLS to the API server: {error}") from None
    return context


def _load_cert_chain_from_memory(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes | None) -> None:
    # ssl only loads client certificates from files: write them to a private directory for a moment.
    with tempfile.TemporaryDirectory(prefix="nodewatch-") as private:
        cert_path = Path(private, "client.crt")
        cert_path.write_bytes(cert_pem)
        key_path: Path | None = None
        if key_pem is not None:
            key_path = Path(private, "client.key")
            key_path.touch(mode=0o600)
            key_path.write_bytes(key_pem)
        context.load_cert_chain(str(cert_path), None if key_path is None else str(key_path))


def in_cluster(
    service_account_dir: str | Path = DEFAULT_SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> KubeConnection:
    """The API server as a pod sees it: service environment variables, service-account CA and token."""
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = env.get("KUBERNETES_SERVICE_PORT", "").strip()
    if not host or not port:
        raise KubeConfigError(
            "not running in a pod (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are unset); "
            "outside a cluster pass --kubeconfig FILE"
        )
    if not port.isdigit():
        raise KubeConfigError(f"KUBERNETES_SERVICE_PORT={port!r} is not a port number")
    account = Path(service_account_dir)
    ca_file = account / "ca.crt"
    where = f"in-cluster config ({account})"
    context = _tls_context(where, ca_file=ca_file)
    return KubeConnection(
        scheme="https",
        host=host.strip("[]"),
        port=int(port),
        base_path="",
        ssl_context=context,
        token=TokenFile(account / "token", clock=clock),
        description=f"in-cluster API server {host}:{port}",
    )


def _named(entries: Any, name: str, section: str, where: str) -> dict[str, Any]:
    if isinstance(entries, list):
        for entry in entries:
            body = entry.get(section) if isinstance(entry, dict) and entry.get("name") == name else None
            if isinstance(body, dict):
                return body
    raise KubeConfigError(f"{where}: no {section} named {name!r} in the {section}s list")


def _decoded(value: Any, field: str, where: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise KubeConfigError(f"{where}: {field} is not valid base64") from None


def from_kubeconfig(path: str | Path, context_name: str | None = None, clock: Clock | None = None) -> KubeConnection:
    """The current context (or ``context_name``) of a kubeconfig file: server, CA and user credentials."""
    import yaml  # only for running outside a cluster: the pod never loads PyYAML

    config_path = Path(path)
    where = f"kubeconfig {config_path}"
    try:
        document = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except OSError as error:
        raise KubeConfigError(f"cannot read {where}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise KubeConfigError(f"{where} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise KubeConfigError(f"{where} does not hold a kubeconfig mapping")
    name = context_name or document.get("current-context")
    if not name:
        raise KubeConfigError(f"{where} has no current-context; pass a context name")
    context = _named(document.get("contexts"), str(name), "context", where)
    cluster = _named(document.get("clusters"), str(context.get("cluster", "")), "cluster", where)
    user_name = context.get("user")
    user = _named(document.get("users"), str(user_name), "user", where) if user_name else {}
    where = f"{where} (context {name})"
    base = config_path.parent

    def local(value: Any) -> Path:
        file = Path(str(value)).expanduser()
        return file if file.is_absolute() else base / file

    if "exec" in user or "auth-provider" in user:
        raise KubeConfigError(
            f"{where}: user {user_name!r} uses an exec or auth-provider plugin, which nodewatch does not run; "
            "use a token, tokenFile or client certificate"
        )
    scheme, host, port, base_path = _parse_server(str(cluster.get("server", "")), where)
    ssl_context: ssl.SSLContext | None = None
    if scheme == "https":
        ca_data = cluster.get("certificate-authority-data")
        ca_file = cluster.get("certificate-authority")
        cert_data = user.get("client-certificate-data")
        key_data = user.get("client-key-data")
        cert_file = user.get("client-certificate")
        key_file = user.get("client-key")
        ssl_context = _tls_context(
            where,
            ca_file=local(ca_file) if ca_file and not ca_data else None,
            ca_data=_decoded(ca_data, "certificate-authority-data", where).decode("latin-1") if ca_data else None,
            insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
            cert_pem=_decoded(cert_data, "client-certificate-data", where) if cert_data else None,
            key_pem=_decoded(key_data, "client-key-data", where) if key_data else None,
            cert_file=local(cert_file) if cert_file else None,
            key_file=local(key_file) if key_file else None,
        )
    token: BearerToken | None = None
    if user.get("token"):
        token = StaticToken(str(user["token"]))
    elif user.get("tokenFile"):
        token = TokenFile(local(user["tokenFile"]), clock=clock)
    return KubeConnection(
        scheme=scheme,
        host=host,
        port=port,
        base_path=base_path,
        ssl_context=ssl_context,
        token=token,
        description=f"API server {scheme}://{host}:{port}{base_path} from {where}",
    )
