"""``kubelet-sim manifest inspect|create|annotate|push``: the ``docker manifest`` equivalents.

``create`` and ``annotate`` keep a local draft of the manifest list under ``<root>/manifests/``
(written atomically); ``push`` mounts each entry's blobs into the list's repository, puts the child
manifests there by digest and the index under the list's tag.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import anyio

from kubelet_sim.cli.args import add_root, node_paths
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.platforms import Platform, parse_platform
from kubelet_sim.core.reference import ImageReference, parse_normalized
from kubelet_sim.credentials.dockerconfig import DockerConfigSearch
from kubelet_sim.credentials.keyring import BasicKeyring
from kubelet_sim.errors import ConfigError, KubeletSimError, ManifestError
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import RegistryClient, ResolvedImage
from kubelet_sim.registry.manifests import Descriptor, ImageManifest
from kubelet_sim.registry.push import Pusher


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("manifest", help="inspect, create, annotate and push manifest lists")
    msub = parser.add_subparsers(dest="manifest_command", metavar="SUBCOMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--hosts-dir", type=Path, help="containerd hosts.toml folder (certs.d)")
        p.add_argument(
            "--docker-config",
            type=Path,
            metavar="PATH",
            help="registry credentials: a docker config.json or the folder holding one "
            "(default, as docker: $DOCKER_CONFIG/config.json, else ~/.docker/config.json)",
        )
        add_root(p)

    inspect = msub.add_parser("inspect", help="show a manifest or index, or resolve a platform")
    inspect.add_argument("image")
    inspect.add_argument("--platform", help="os/arch[/variant]: resolve as containerd would")
    inspect.add_argument("--output", choices=["json", "text"], default="json")
    inspect.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="as docker manifest inspect --verbose: every image of a list with its platform "
        "and manifest",
    )
    common(inspect)
    inspect.set_defaults(func=_inspect)

    create = msub.add_parser("create", help="draft a manifest list from images")
    create.add_argument("list")
    create.add_argument("images", nargs="+", metavar="IMAGE")
    create.add_argument("--amend", action="store_true", help="add to an existing draft")
    common(create)
    create.set_defaults(func=_create)

    annotate = msub.add_parser("annotate", help="set an entry's platform in a draft list")
    annotate.add_argument("list")
    annotate.add_argument("image")
    annotate.add_argument("--os")
    annotate.add_argument("--arch")
    annotate.add_argument("--variant")
    common(annotate)
    annotate.set_defaults(func=_annotate)

    push = msub.add_parser("push", help="push a drafted manifest list")
    push.add_argument("list")
    push.add_argument("--purge", action="store_true", help="delete the draft after pushing")
    common(push)
    push.set_defaults(func=_push)


def _docker_config(args: argparse.Namespace) -> Path | None:
    """The docker config to read credentials from, as docker finds it; None when there is none.

    Raises:
        ConfigError: ``--docker-config`` names nothing.
    """
    if args.docker_config is not None:
        if not args.docker_config.exists():
            raise ConfigError(str(args.docker_config), "--docker-config", "no such file or folder")
        return Path(args.docker_config)
    folder = os.environ.get("DOCKER_CONFIG")
    default = Path(folder) if folder else Path.home() / ".docker"
    return default if (default / "config.json").is_file() else None


def credentials_for(args: argparse.Namespace, ref: ImageReference) -> Credentials | None:
    """The first docker config credentials whose key matches ``ref`` (docker's lookup)."""
    path = _docker_config(args)
    if path is None:
        return None
    entries, _ = DockerConfigSearch.only(path).read()
    keyring = BasicKeyring()
    keyring.add(None, entries)
    found = keyring.lookup(ref.name)
    return found[0] if found else None


def _run(args: argparse.Namespace, body: Any) -> Any:
    async def main() -> Any:
        async with RegistryClient(hosts_dir=args.hosts_dir) as client:
            return await body(client)

    return anyio.run(main)


def resolution_json(resolved: ResolvedImage) -> dict[str, Any]:
    """The platform resolution of an image as printed by ``manifest inspect --platform``."""
    return {
        "reference": str(resolved.reference),
        "digest": str(resolved.descriptor.digest),
        "media_type": resolved.descriptor.media_type,
        "manifest_digest": str(resolved.manifest_descriptor.digest),
        "platform": str(resolved.platform) if resolved.platform else _config_platform(resolved),
        "config_digest": str(resolved.manifest.config.digest),
        "size": resolved.size,
        "layers": [
            {"digest": str(layer.digest), "size": layer.size, "media_type": layer.media_type}
            for layer in resolved.manifest.layers
        ],
    }


def _config_platform(resolved: ResolvedImage) -> str:
    platform = _platform_from_config(resolved.config)
    return str(platform) if platform else ""


def _platform_from_config(config: bytes) -> Platform | None:
    try:
        doc = json.loads(config)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not doc.get("os") or not doc.get("architecture"):
        return None
    return Platform.from_oci(doc)


def _inspect(args: argparse.Namespace) -> int:
    ref = parse_normalized(args.image)

    creds = credentials_for(args, ref)

    async def body(client: RegistryClient) -> Any:
        if args.platform:
            resolved = await client.resolve_image(ref, parse_platform(args.platform), creds)
            return resolution_json(resolved)
        desc = await client.resolve(ref, creds)
        parsed = await client.fetch_manifest(ref, desc, creds)
        if args.verbose:
            return await _verbose(client, ref, desc, parsed, creds)
        doc: dict[str, Any] = json.loads(parsed.raw)
        return doc

    result = _run(args, body)
    if args.output == "json" or isinstance(result, list):
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, list | dict) else value}")
    return 0


async def _verbose(
    client: RegistryClient,
    ref: ImageReference,
    desc: Descriptor,
    parsed: Any,
    creds: Credentials | None,
) -> dict[str, Any] | list[dict[str, Any]]:
    """``docker manifest inspect --verbose``: an image as Ref, Descriptor and its manifest; a
    list as one such object per image it holds, each with the entry's platform."""
    name = ref.name
    if isinstance(parsed, ImageManifest):
        return {"Ref": f"{name}@{desc.digest}", "Descriptor": desc.to_json(),
                "SchemaV2Manifest": json.loads(parsed.raw)}  # fmt: skip
    out = []
    for entry in parsed.manifests:
        if not entry.is_manifest:
            continue  # a nested index: docker lists images only
        image = await client.fetch_manifest(ref, entry, creds)
        out.append({"Ref": f"{name}@{entry.digest}", "Descriptor": entry.to_json(),
                    "SchemaV2Manifest": json.loads(image.raw)})  # fmt: skip
    return out


# --- drafts ------------------------------------------------------------------------------------


def _draft_path(args: argparse.Namespace, list_ref: ImageReference) -> Path:
    safe = str(list_ref).replace("/", "_").replace(":", "-").replace("@", "+")
    return node_paths(args).manifest_drafts / f"{safe}.json"


def _load_draft(path: Path, list_name: str) -> dict[str, Any]:
    if not path.exists():
        raise KubeletSimError(f"no manifest list draft {list_name!r}; run 'manifest create' first")
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(str(path), None, f"manifest list draft is not valid JSON: {exc}") from exc
    return doc


def _save_draft(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".draft-")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(doc, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create(args: argparse.Namespace) -> int:
    list_ref = parse_normalized(args.list)
    path = _draft_path(args, list_ref)
    if path.exists() and not args.amend:
        raise KubeletSimError(f"manifest list draft {args.list!r} exists; use --amend")
    draft: dict[str, Any] = (
        _load_draft(path, args.list) if path.exists() else {"list": str(list_ref), "entries": []}
    )
    refs = [parse_normalized(image) for image in args.images]
    for ref in refs:
        if ref.domain != list_ref.domain:
            raise KubeletSimError(
                f"{ref} is on {ref.domain}, the list on {list_ref.domain}: "
                "entries must be on the list's registry"
            )

    async def body(client: RegistryClient) -> list[dict[str, Any]]:
        entries = []
        for ref in refs:
            creds = credentials_for(args, ref)
            desc = await client.resolve(ref, creds)
            parsed = await client.fetch_manifest(ref, desc, creds)
            if not isinstance(parsed, ImageManifest):
                raise ManifestError(f"{ref} is a manifest list; only images can be added")
            resolved = await client.resolve_image(ref, None, creds)
            platform = _platform_from_config(resolved.config)
            entries.append(
                {
                    "image": str(ref),
                    "repository": ref.repository,
                    "descriptor": desc.to_json(),
                    "platform": platform.to_oci() if platform else {},
                    "blobs": [parsed.config.to_json()] + [x.to_json() for x in parsed.layers],
                    "manifest": parsed.raw.decode(),
                }
            )
        return entries

    new_entries: list[dict[str, Any]] = _run(args, body)
    kept = [e for e in draft["entries"] if e["image"] not in {n["image"] for n in new_entries}]
    draft["entries"] = kept + new_entries
    _save_draft(path, draft)
    print(f"Created manifest list {list_ref}")
    return 0


def _annotate(args: argparse.Namespace) -> int:
    list_ref = parse_normalized(args.list)
    path = _draft_path(args, list_ref)
    draft = _load_draft(path, args.list)
    image = str(parse_normalized(args.image))
    for entry in draft["entries"]:
        if entry["image"] == image:
            platform = dict(entry.get("platform") or {})
            for key, value in (("os", args.os), ("architecture", args.arch)):
                if value:
                    platform[key] = value
            if args.variant is not None:
                platform["variant"] = args.variant
            if not platform.get("os") or not platform.get("architecture"):
                raise KubeletSimError(f"{image}: --os and --arch are needed (none in its config)")
            # Validates the combination (raises PlatformError naming it); stored as given.
            parse_platform("/".join(_platform_parts(platform)))
            entry["platform"] = {k: v for k, v in platform.items() if v}
            _save_draft(path, draft)
            return 0
    raise KubeletSimError(f"{image} is not in manifest list {list_ref}")


def _platform_parts(platform: dict[str, str]) -> list[str]:
    parts = [platform["os"], platform["architecture"]]
    if platform.get("variant"):
        parts.append(platform["variant"])
    return parts


def _push(args: argparse.Namespace) -> int:
    list_ref = parse_normalized(args.list)
    path = _draft_path(args, list_ref)
    draft = _load_draft(path, args.list)
    if not draft["entries"]:
        raise KubeletSimError(f"manifest list {list_ref} has no entries")
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    if all(e["descriptor"]["mediaType"] == mt.DOCKER_MANIFEST for e in draft["entries"]):
        index["mediaType"] = mt.DOCKER_MANIFEST_LIST

    async def body(client: RegistryClient) -> Digest:
        pusher = Pusher(client, list_ref, credentials_for(args, list_ref))
        for entry in draft["entries"]:
            source = parse_normalized(entry["image"])
            for blob in entry["blobs"]:
                await pusher.copy_blob(source, Descriptor.from_json(blob, f"draft {path}"))
            raw = entry["manifest"].encode()
            await pusher.push_manifest(
                raw, entry["descriptor"]["mediaType"], str(Digest.from_bytes(raw))
            )
            descriptor = dict(entry["descriptor"])
            if entry.get("platform"):
                descriptor["platform"] = entry["platform"]
            index["manifests"].append(descriptor)
        raw_index = json.dumps(index, indent=3).encode()
        tag = list_ref.tag or "latest"
        return await pusher.push_manifest(raw_index, index["mediaType"], tag)

    digest = _run(args, body)
    if args.purge:
        path.unlink()
    print(digest)
    return 0
