"""Reading a running daemon's API from the CLI (``describe``, ``explain pod``).

Anything that is not a daemon's answer (an unreachable address, another server, a document
without the fields asked for) is a :class:`~kubelet_sim.errors.KubeletSimError` naming the
server, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from kubelet_sim.errors import ConfigError, KubeletSimError

__all__ = ["DEFAULT_SERVER", "MAX_ANSWER", "daemon_client", "get_json", "host_line", "waiting_line"]

DEFAULT_SERVER = "http://127.0.0.1:10255"
MAX_ANSWER = 16 * 1024 * 1024  # a daemon's pod and event documents stay far below this


@contextmanager
def daemon_client(server: str, *, timeout: float = 10.0) -> Iterator[httpx.Client]:
    """A client for the daemon at ``server``; a missing field in its answers (``KeyError``,
    ``TypeError``, ``AttributeError`` in the block) reads as "not a kubelet-sim daemon".

    Raises:
        ConfigError: ``server`` is not a URL.
        KubeletSimError: the answers are not a daemon's.
    """
    try:
        client = httpx.Client(base_url=server, timeout=timeout, trust_env=False)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigError(None, "--server", f"not a URL: {server!r} ({exc})") from None
    with client:
        try:
            yield client
        except (KeyError, TypeError, AttributeError) as exc:
            raise KubeletSimError(
                f"{server}: not a kubelet-sim daemon (its answer lacks {exc})"
            ) from None
        except (ValueError, OverflowError) as exc:  # a field of the wrong kind or range
            raise KubeletSimError(
                f"{server}: not a kubelet-sim daemon (a field of its answer is malformed: {exc})"
            ) from None
        except httpx.InvalidURL as exc:
            raise ConfigError(None, "--server", f"not a URL: {server!r} ({exc})") from None


def get_json(client: httpx.Client, path: str, **params: str) -> Any:
    """The JSON document at ``path``; anything that is not a daemon's answer is a clear error."""
    where = f"{str(client.base_url).rstrip('/')}/{path.lstrip('/')}"
    try:
        with client.stream("GET", path, params=params) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER:
                    raise KubeletSimError(f"{where}: answer larger than {MAX_ANSWER} bytes")
    except httpx.HTTPError as exc:
        raise KubeletSimError(f"cannot reach the daemon at {client.base_url}: {exc}") from None
    try:
        doc = json.loads(bytes(body))
    except (ValueError, RecursionError):
        doc = None
    if 400 <= response.status_code < 500 and isinstance(doc, dict) and "error" in doc:
        raise KubeletSimError(str(doc["error"]))  # the daemon's own refusal: a 404, a bad name
    if response.status_code != 200:
        raise KubeletSimError(f"{where}: HTTP {response.status_code}: not a kubelet-sim answer")
    if not isinstance(doc, dict):
        raise KubeletSimError(
            f"{where}: not a kubelet-sim daemon (the answer is not a JSON object)"
        )
    return doc


def waiting_line(waiting: dict[str, Any]) -> str:
    """The request a pull under way waits on (``pullInProgress.waitingOn``)."""
    return f"waiting on {waiting['host']} ({waiting['what']}) for {waiting['forSeconds']:.1f}s"


def host_line(h: dict[str, Any]) -> str:
    """One request of a pull (``pulls[].hosts[]``): what for, where, how long, what came back."""
    outcome = h["error"] or "ok"
    if h.get("status"):
        outcome = f"HTTP {h['status']}: {outcome}"
    return f"{h['what']} on {h['role']} {h['host']} in {h['seconds']:.1f}s: {outcome}"
