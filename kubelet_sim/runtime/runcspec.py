"""The OCI runtime spec of a runc container: ``config.json``, its user and its environment check.

Shaped as ``runc spec``'s, with containerd's default capabilities and ``runc spec``'s masked and
read-only paths; no network namespace (the host's: :mod:`kubelet_sim.runtime.runc`). The user is
an image's ``User`` resolved as containerd resolves it, in the container's own ``/etc/passwd``
and ``/etc/group`` (read inside the rootfs, never outside it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubelet_sim.errors import ContainerRuntimeError
from kubelet_sim.runtime.layers import open_in_root
from kubelet_sim.runtime.port import ContainerConfig, ImageConfig

__all__ = [
    "CAPABILITIES",
    "MASKED_PATHS",
    "MOUNTS",
    "NAMESPACES",
    "READONLY_PATHS",
    "check_env",
    "resolve_user",
    "runtime_spec",
]

# containerd's default capabilities (oci.defaultUnixCaps), Docker's too.
CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
# `runc spec`'s masked and read-only paths (containerd's defaults are the same).
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",  # noqa: S108 - a mount point in the container
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
        "destination": "/dev/mqueue",
        "type": "mqueue",
        "source": "mqueue",
        "options": ["nosuid", "noexec", "nodev"],
    },
    {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    },
    {
        "destination": "/sys/fs/cgroup",
        "type": "cgroup",
        "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
    },
)
NAMESPACES = ("pid", "ipc", "uts", "mount")  # no "network": the host's (module docstring)


def runtime_spec(
    config: ContainerConfig, image: ImageConfig, rootfs: Path, user: tuple[int, int]
) -> dict[str, Any]:
    """The OCI runtime spec (``config.json``) of a container, shaped as ``runc spec``'s."""
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": user[0], "gid": user[1]},
            "args": list(config.argv),
            "env": [f"{key}={value}" for key, value in config.env],
            "cwd": config.working_dir or image.working_dir or "/",
            "capabilities": {
                kind: list(CAPABILITIES) for kind in ("bounding", "effective", "permitted")
            },
            # allowPrivilegeEscalation defaults to true, which is no_new_privs off.
            "noNewPrivileges": False,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": config.hostname,
        "mounts": [dict(mount) for mount in MOUNTS],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": kind} for kind in NAMESPACES],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def check_env(container_id: str, env: tuple[tuple[str, str], ...]) -> None:
    for key, value in env:
        if not key or "=" in key or "\x00" in key or "\x00" in value:
            # Name the variable, never the value (it may be a Secret's).
            raise ContainerRuntimeError(container_id, f"invalid environment variable {key!r}")


def _id(text: str) -> int | None:
    """A numeric uid/gid (ASCII digits, at most 10 of them: ids are 32-bit), else None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


def resolve_user(rootfs: Path, user: str) -> tuple[int, int] | str:
    """``uid:gid`` of an image's ``User`` (``name``, ``uid``, with ``:group``), as containerd
    resolves it in the container's ``/etc/passwd`` and ``/etc/group``; or what went wrong."""
    if not user:
        return (0, 0)
    name, _, group = user.partition(":")
    passwd = _entries(rootfs, "/etc/passwd")
    if _id(name) is not None:
        uid = _id(name) or 0
        matches = [e for e in passwd if e[2:3] == [name]]
        gid = (_id(matches[0][3]) or 0) if matches else 0
    else:
        matches = [
            e for e in passwd if e[0] == name and _id(e[2]) is not None and _id(e[3]) is not None
        ]
        if not matches:
            return f"unable to find user {name}: no matching entries in passwd file"
        uid, gid = _id(matches[0][2]) or 0, _id(matches[0][3]) or 0
    group_id = _id(group)
    if group_id is not None:
        gid = group_id
    elif group:
        groups = [
            e for e in _entries(rootfs, "/etc/group") if e[0] == group and _id(e[2]) is not None
        ]
        if not groups:
            return f"unable to find group {group}: no matching entries in group file"
        gid = _id(groups[0][2]) or 0
    return (uid, gid)


def _entries(rootfs: Path, path: str) -> list[list[str]]:
    """The colon-separated lines of a passwd-like file of the rootfs (never outside it)."""
    opened = open_in_root(rootfs, path)
    if opened is None:
        return []
    with opened:
        text = opened.read(1 << 20).decode(errors="replace")
    return [fields for line in text.splitlines() if len(fields := line.split(":")) >= 4]
