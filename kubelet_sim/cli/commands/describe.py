"""``kubelet-sim describe pod NS/NAME``: a ``kubectl describe``-style view from a running daemon."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

import httpx

from kubelet_sim.errors import KubeletSimError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("describe", help="describe a pod of a running daemon")
    parser.add_argument("kind", choices=["pod", "pods", "po"])
    parser.add_argument("target", metavar="NAMESPACE/NAME")
    parser.add_argument("--server", default="http://127.0.0.1:10255", help="daemon API URL")
    parser.set_defaults(func=_describe)


def _get(client: httpx.Client, path: str, **params: str) -> Any:
    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise KubeletSimError(f"cannot reach the daemon at {client.base_url}: {exc}") from exc
    if response.status_code == 404:
        raise KubeletSimError(json.loads(response.text).get("error", "not found"))
    if response.status_code != 200:
        raise KubeletSimError(f"{path}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


def _describe(args: argparse.Namespace) -> int:
    namespace, sep, name = args.target.partition("/")
    if not sep or not namespace or not name:
        raise KubeletSimError(f"want NAMESPACE/NAME, got {args.target!r}")
    with httpx.Client(base_url=args.server, timeout=10.0, trust_env=False) as client:
        pod = _get(client, f"/pods/{namespace}/{name}")
        events = _get(client, "/events", pod=f"{namespace}/{name}")["items"]
    print(render(pod, events))
    return 0


def render(pod: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """The describe text for a pod document and its events (``GET /pods/..`` and ``/events``)."""
    lines = [
        f"Name:             {pod['name']}",
        f"Namespace:        {pod['namespace']}",
        f"UID:              {pod['uid']}",
        f"Service Account:  {pod['serviceAccountName']}",
        f"Pull Secrets:     {', '.join(pod['imagePullSecrets']) or '<none>'}",
        f"Images Ready:     {'True' if pod['imagesReady'] else 'False'}",
    ]
    for title, key in (("Init Containers", "initContainers"), ("Containers", "containers")):
        if not pod[key]:
            continue
        lines.append(f"{title}:")
        for c in pod[key]:
            lines.append(f"  {c['name']}:")
            lines.append(f"    Image:              {c['image']}")
            lines.append(f"    Image Pull Policy:  {c['imagePullPolicy']}")
            state = c["state"]
            if "ready" in state:
                lines.append("    State:              Ready")
                lines.append(
                    f"    Image ID:           {state['ready']['repoDigest'] or state['ready']['imageID']}"
                )
            else:
                lines.append("    State:              Waiting")
                lines.append(f"      Reason:           {state['waiting']['reason']}")
                if state["waiting"]["message"]:
                    lines.append(f"      Message:          {state['waiting']['message']}")
            lines.append(f"    Pull Attempts:      {c['pullAttempts']}")
            if c.get("backoffRemainingSeconds"):
                lines.append(f"    Back-off Remaining: {c['backoffRemainingSeconds']:.0f}s")
    lines.append("Events:")
    if not events:
        lines.append("  <none>")
        return "\n".join(lines)
    now = datetime.datetime.now(datetime.UTC).timestamp()
    rows = [
        ("Type", "Reason", "Age", "From", "Message"),
        ("----", "------", "----", "----", "-------"),
    ]
    for e in sorted(events, key=lambda e: e["lastTimestamp"]):
        age = _age(now - e["lastTimestamp"])
        if e["count"] > 1:
            age = f"{age} (x{e['count']} over {_age(now - e['firstTimestamp'])})"
        rows.append((e["type"], e["reason"], age, "kubelet", e["message"]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        lines.append(
            "  "
            + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4]))
            + "  "
            + row[4]
        )
    return "\n".join(lines)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
