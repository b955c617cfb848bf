"""``kubelet-sim describe pod NS/NAME``: a ``kubectl describe``-style view from a running daemon."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from kubelet_sim.cli.daemonapi import (
    DEFAULT_SERVER,
    daemon_client,
    get_json,
    host_line,
    waiting_line,
)
from kubelet_sim.errors import KubeletSimError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("describe", help="describe a pod of a running daemon")
    parser.add_argument("kind", choices=["pod", "pods", "po"])
    parser.add_argument("target", metavar="NAMESPACE/NAME")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="daemon API URL")
    parser.add_argument(
        "--reveal",
        action="store_true",
        help="show Secret-sourced environment values (the daemon answers this on loopback only)",
    )
    parser.set_defaults(func=_describe)


def _describe(args: argparse.Namespace) -> int:
    namespace, sep, name = args.target.partition("/")
    if not sep or not namespace or not name:
        raise KubeletSimError(f"want NAMESPACE/NAME, got {args.target!r}")
    with daemon_client(args.server) as client:
        pod = get_json(
            client, f"/pods/{namespace}/{name}", **({"reveal": "1"} if args.reveal else {})
        )
        events = get_json(client, "/events", pod=f"{namespace}/{name}")["items"]
        text = render(pod, events)
    print(text)
    return 0


def _state_lines(label: str, state: dict[str, Any]) -> list[str]:
    """kubectl's State / Last State block."""
    if "running" in state:
        return [f"    {label:<19} Running", f"      Started:          {_when(state['running'])}"]
    if "terminated" in state:
        done = state["terminated"]
        return [
            f"    {label:<19} Terminated",
            f"      Reason:           {done['reason']}",
            f"      Exit Code:        {done['exitCode']}",
            f"      Started:          {_stamp(done.get('startedAt'))}",
            f"      Finished:         {_stamp(done.get('finishedAt'))}",
        ]
    if "ready" in state:  # a daemon from before containers ran: its image is ready
        return [f"    {label:<19} Ready"]
    waiting = state.get("waiting", {})
    lines = [f"    {label:<19} Waiting", f"      Reason:           {waiting.get('reason', '')}"]
    if waiting.get("message"):
        lines.append(f"      Message:          {waiting['message']}")
    return lines


def _when(running: dict[str, Any]) -> str:
    return _stamp(running.get("startedAt"))


def _stamp(value: float | None) -> str:
    if value is None:
        return "<unknown>"
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime(
        "%a, %d %b %Y %H:%M:%S +0000"
    )


def _container_lines(c: dict[str, Any]) -> list[str]:
    lines = [f"  {c['name']}:"]
    if c.get("containerID"):
        lines.append(f"    Container ID:       {c['containerID']}")
    lines.append(f"    Image:              {c['image']}")
    if c.get("imageID"):
        lines.append(f"    Image ID:           {c.get('repoDigest') or c['imageID']}")
    lines.append(f"    Image Pull Policy:  {c['imagePullPolicy']}")
    if c.get("command"):
        lines.append(f"    Command:            {' '.join(c['command'])}")
    lines.extend(_state_lines("State:", c["state"]))
    if c.get("lastState"):
        lines.extend(_state_lines("Last State:", c["lastState"]))
    lines.append(f"    Ready:              {'True' if c.get('ready') else 'False'}")
    lines.append(f"    Restart Count:      {c.get('restartCount', 0)}")
    lines.append(f"    Pull Attempts:      {c['pullAttempts']}")
    current = c.get("pullInProgress")
    if current:
        lines.append(f"    Pulling:            {current['step']} for {current['forSeconds']:.1f}s")
        if current.get("waitingOn"):
            lines.append(f"      {waiting_line(current['waitingOn'])}")
    if c.get("pulls"):
        lines.append("    Recent Pulls:")
        for p in c["pulls"]:
            shown = p["result"] if not p["message"] else f"{p['result']}: {p['message']}"
            lines.append(
                f"      {_stamp(p['startedAt'])}  waited {p['waitedSeconds']:.1f}s, "
                f"took {p['seconds']:.1f}s  {shown}"
            )
            lines.extend(f"        {host_line(h)}" for h in _failed_hosts(p.get("hosts", [])))
    if c.get("backoffRemainingSeconds"):
        lines.append(f"    Back-off Remaining: {c['backoffRemainingSeconds']:.0f}s")
    if "env" in c:
        if not c["env"]:
            lines.append("    Environment:        <none>")
        else:
            lines.append("    Environment:")
            width = max(len(item["name"]) for item in c["env"]) + 1
            for item in c["env"]:
                lines.append(f"      {item['name'] + ':':<{width}}  {item['value']}")
    return lines


def _failed_hosts(hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The requests of a pull worth showing: each failure, and the request that answered after
    one (which host or mirror served the pull in the end)."""
    shown = [h for h in hosts if h["error"]]
    if shown:
        shown.extend(h for h in hosts if not h["error"] and h["what"] == "resolve")
    return shown


def render(pod: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """The describe text for a pod document and its events (``GET /pods/..`` and ``/events``)."""
    lines = [
        f"Name:             {pod['name']}",
        f"Namespace:        {pod['namespace']}",
        f"UID:              {pod['uid']}",
        f"Service Account:  {pod['serviceAccountName']}",
        f"Status:           {pod.get('phase', 'Pending')}",
    ]
    if pod.get("reason"):
        lines.append(f"Reason:           {pod['reason']}")
        lines.append(f"Message:          {pod.get('message', '')}")
    lines += [
        f"IP:               {pod.get('podIP') or '<none>'}",
        f"Hostname:         {pod.get('hostname') or '<none>'}",
        f"Pull Secrets:     {', '.join(pod['imagePullSecrets']) or '<none>'}",
        f"Runtime Class:    {pod.get('runtimeClassName') or '<none>'}",
    ]
    if pod.get("overhead"):
        lines.append(
            "Overhead:         "
            + ", ".join(f"{k}: {v}" for k, v in sorted(pod["overhead"].items()))
        )
    lines.append(f"Images Ready:     {'True' if pod['imagesReady'] else 'False'}")
    for title, key in (("Init Containers", "initContainers"), ("Containers", "containers")):
        if not pod[key]:
            continue
        lines.append(f"{title}:")
        for c in pod[key]:
            lines.extend(_container_lines(c))
    if pod.get("unsupportedFields"):
        lines.append("Not Modelled:     " + ", ".join(pod["unsupportedFields"]))
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
