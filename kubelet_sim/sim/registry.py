"""Run the real CNCF distribution registry (``docker-registry serve CONFIG``) on loopback.

The configuration is composed from small pieces (storage, TLS, htpasswd, token auth, the storage
``redirect`` middleware) so tests can start the variants they need. The registry listens on a free
loopback port, keeps its storage in a folder the caller owns, and is ready once ``/v2/`` answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import yaml

from kubelet_sim.errors import KubeletSimError

REGISTRY_BINARY = "docker-registry"
INSTALL_HINT = (
    "the CNCF distribution registry binary 'docker-registry' is not on PATH; install it with "
    "'sudo apt-get install -y docker-registry' (Debian/Ubuntu), or run scripts/bootstrap.sh"
)


# Users of the htpasswd test registries (test-only values; the leak tests search for them).
HTPASSWD_USERS = {"alice": "alice-Secret-Pa55", "bob": "bob-Other-Pa55"}


class RegistryUnavailableError(KubeletSimError):
    """The registry binary is missing or the registry did not come up."""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Server certificate and key (PEM files) for the registry's HTTPS listener."""

    certificate: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True, slots=True)
class TokenAuthConfig:
    """docker/distribution ``auth.token`` settings."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """One registry's configuration; compose variants with :func:`dataclasses.replace`."""

    storage_dir: Path
    port: int = 0
    tls: TLSConfig | None = None
    htpasswd: Path | None = None
    token: TokenAuthConfig | None = None
    redirect_baseurl: str | None = None
    delete_enabled: bool = True
    access_log: bool = False  # one combined-log line per request in the process log
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The registry's YAML configuration as a dict."""
        storage: dict[str, Any] = {
            "filesystem": {"rootdirectory": str(self.storage_dir)},
            "delete": {"enabled": self.delete_enabled},
            "maintenance": {"uploadpurging": {"enabled": False}},
        }
        http: dict[str, Any] = {
            "addr": f"127.0.0.1:{self.port}",
            "secret": "kubelet-sim-test-secret",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if self.tls is not None:
            tls: dict[str, Any] = {
                "certificate": str(self.tls.certificate),
                "key": str(self.tls.key),
            }
            if self.tls.client_ca is not None:
                tls["clientcas"] = [str(self.tls.client_ca)]
            http["tls"] = tls
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": not self.access_log}},
            "storage": storage,
            "http": http,
        }
        if self.htpasswd is not None and self.token is not None:
            raise ValueError("distribution allows one auth provider: htpasswd or token, not both")
        if self.htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "kubelet-sim", "path": str(self.htpasswd)}}
        if self.token is not None:
            config["auth"] = {
                "token": {
                    "realm": self.token.realm,
                    "service": self.token.service,
                    "issuer": self.token.issuer,
                    "rootcertbundle": str(self.token.rootcertbundle),
                }
            }
        if self.redirect_baseurl is not None:
            config["middleware"] = {
                "storage": [{"name": "redirect", "options": {"baseurl": self.redirect_baseurl}}]
            }
        config.update(self.extra)
        return config


class RegistryFactory(Protocol):
    """Starts a registry from :class:`RegistryConfig` fields (the ``registry_factory`` fixture)."""

    def __call__(self, **fields: Any) -> RegistryProcess: ...


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def registry_binary() -> str:
    """Path of the registry binary.

    Raises:
        RegistryUnavailableError: with the install hint when it is missing.
    """
    found = shutil.which(REGISTRY_BINARY)
    if found is None:
        raise RegistryUnavailableError(INSTALL_HINT)
    return found


class RegistryProcess:
    """A running ``docker-registry serve`` subprocess; stop it with :meth:`stop`."""

    def __init__(self, config: RegistryConfig, workdir: Path) -> None:
        self.config = config if config.port else replace(config, port=free_port())
        self.workdir = workdir
        self.config_path = workdir / "registry.yml"
        self.log_path = workdir / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the registry host as it appears in image references."""
        return f"127.0.0.1:{self.config.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.config.tls is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> RegistryProcess:
        """Write the config, start the registry and wait until ``/v2/`` answers."""
        binary = registry_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.storage_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [binary, "serve", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RegistryUnavailableError(
                    f"registry exited with status {self._proc.returncode}: {self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(  # noqa: S310 - loopback URL we built
                    f"{self.url}/v2/", timeout=1.0, context=context
                ):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RegistryUnavailableError(f"registry not ready after {timeout}s: {self._log_tail()}")

    def access_log(self) -> list[str]:
        """The requests the registry logged so far (``access_log=True``), one line each."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if '"' in line and " HTTP/1." in line]

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the registry (SIGTERM, then SIGKILL); storage stays for a restart."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self) -> None:
        """Stop the registry at once (SIGKILL), as a crash or a network cut would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self, timeout: float = 15.0) -> RegistryProcess:
        """Stop and start again on the same port and storage."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> RegistryProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """Write an htpasswd file with bcrypt hashes (the only kind distribution accepts).

    Uses the ``htpasswd`` tool from apache2-utils.
    """
    tool = shutil.which("htpasswd")
    if tool is None:
        raise RegistryUnavailableError(
            "'htpasswd' is not on PATH; install it with 'sudo apt-get install -y apache2-utils'"
        )
    lines = []
    for user, password in users.items():
        out = subprocess.run(
            [tool, "-nbB", user, password], check=True, capture_output=True, text=True
        ).stdout.strip()
        lines.append(out)
    path.write_text("\n".join(lines) + "\n")
    return path
