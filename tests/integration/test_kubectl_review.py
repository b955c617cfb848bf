"""A platform engineer's kubectl workflows against the daemon, beyond the README walkthrough.

What holds is kept as plain tests; where the daemon differs from a real API server in a way a
kubectl user notices, the test states upstream's behaviour and is a strict xfail naming the bug,
so it turns into a failure (XPASS) once fixed. The harness is test_kubectl.py's: an in-process
daemon on a free loopback port and the real kubectl as a subprocess.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
import yaml
from test_kubectl import WAIT, Kubectl, background, busybox, row, running, wait_for_text

from kubelet_sim.sim.registry import RegistryProcess

pytestmark = [pytest.mark.anyio, pytest.mark.registry]


def pod(name: str, image: str, *, grace: int = 1, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "app", "image": image, **container}],
        },
    }


def documents(*docs: dict[str, Any]) -> str:
    """A multi-document YAML file, as ``kubectl apply -f`` reads it."""
    return yaml.safe_dump_all(docs, sort_keys=False)


def configmap(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": name},
    }


def other_kinds() -> list[dict[str, Any]]:
    """One object of each served kind but Pod and Event (a Secret, Service, ...)."""
    v1 = {"apiVersion": "v1"}
    return [
        configmap("cfg"),
        {**v1, "kind": "Secret", "metadata": {"name": "sec"}, "stringData": {"p": "hunter22"}},
        {**v1, "kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}},
        {**v1, "kind": "ServiceAccount", "metadata": {"name": "sa"}},
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": "rc"},
            "handler": "sim",
        },
    ]


async def jsonpath(k: Kubectl, *args: str, path: str) -> str:
    return await k.ok("get", *args, "-o", f"jsonpath={path}")


async def container_id(k: Kubectl, name: str) -> str:
    return await jsonpath(k, "pod", name, path="{.status.containerStatuses[0].containerID}")


# -- what holds ------------------------------------------------------------------------------


async def test_edit_replace_label_annotate_and_apply_container_lists(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    image = await busybox(registry)
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        await k.ok("apply", "-f", "-", stdin=json.dumps(pod("web", image)))
        await k.ok("wait", "--for=condition=Ready", "pod/web", f"--timeout={int(WAIT)}s")

        # label and annotate: --overwrite, refusal without it, and removal with KEY-
        assert (await k.ok("label", "pod", "web", "tier=front")).strip() == "pod/web labeled"
        refused = await k.fails("label", "pod", "web", "tier=back")
        assert "'tier' already has a value (front), and --overwrite is false" in refused
        await k.ok("label", "pod", "web", "tier=back", "--overwrite")
        assert (await k.ok("label", "pod", "web", "app-")).strip() == "pod/web unlabeled"
        labels = json.loads(await jsonpath(k, "pod", "web", path="{.metadata.labels}"))
        assert labels == {"tier": "back"}
        await k.ok("annotate", "pod", "web", "note=one")
        await k.ok("annotate", "pod", "web", "note=two", "--overwrite")
        assert await jsonpath(k, "pod", "web", path="{.metadata.annotations.note}") == "two"
        await k.ok("annotate", "pod", "web", "note-")
        assert await jsonpath(k, "pod", "web", path="{.metadata.annotations.note}") == ""

        # kubectl edit: the editor rewrites the file, kubectl patches the difference
        editor = tmp_path / "editor.sh"
        editor.write_text("#!/bin/sh\nsed -i 's/tier: back/tier: edited/' \"$1\"\n")
        editor.chmod(0o755)
        env = {**k.env, "EDITOR": str(editor), "KUBE_EDITOR": str(editor)}
        edited = Kubectl(k.binary, env, k.daemon)
        assert (await edited.ok("edit", "pod", "web")).strip() == "pod/web edited"
        assert await jsonpath(k, "pod", "web", path="{.metadata.labels.tier}") == "edited"
        cancelled = Kubectl(k.binary, {**env, "KUBE_EDITOR": "true"}, k.daemon)
        assert (
            "Edit cancelled, no changes made." in (await cancelled.run("edit", "pod", "web")).stderr
        )
        notfound = await edited.fails("edit", "secret", "nothere")
        assert 'secrets "nothere" not found' in notfound

        # replace --force: delete, wait, create: a new pod (new uid), running again
        uid = await jsonpath(k, "pod", "web", path="{.metadata.uid}")
        replaced = await k.ok("replace", "--force", "-f", "-", stdin=json.dumps(pod("web", image)))
        assert replaced.splitlines() == ['pod "web" deleted', "pod/web replaced"]
        assert await jsonpath(k, "pod", "web", path="{.metadata.uid}") not in ("", uid)
        await k.ok("wait", "--for=condition=Ready", "pod/web", f"--timeout={int(WAIT)}s")

        # client-side apply: add a second container, then remove it ($setElementOrder and
        # $patch: delete in the three-way strategic merge patch)
        one = pod("multi", image)
        two = json.loads(json.dumps(one))
        two["spec"]["containers"].append({"name": "side", "image": image})
        assert (await k.ok("apply", "-f", "-", stdin=json.dumps(one))).strip() == (
            "pod/multi created"
        )
        assert (await k.ok("apply", "-f", "-", stdin=json.dumps(two))).strip() == (
            "pod/multi configured"
        )
        names = "{.spec.containers[*].name}"
        assert await jsonpath(k, "pod", "multi", path=names) == "app side"
        await k.until(
            lambda out: row(out, "multi")[1:3] == ["2/2", "Running"], "get", "pods", what="2/2"
        )
        assert (await k.ok("apply", "-f", "-", stdin=json.dumps(one))).strip() == (
            "pod/multi configured"
        )
        assert await jsonpath(k, "pod", "multi", path=names) == "app"
        await k.until(
            lambda out: row(out, "multi")[1:3] == ["1/1", "Running"], "get", "pods", what="1/1"
        )
        assert (await k.ok("apply", "-f", "-", stdin=json.dumps(one))).strip() == (
            "pod/multi unchanged"
        )


async def test_create_get_formats_watch_wait_and_deletes(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    image = await busybox(registry)
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        # timing honesty: right after apply, the pod is Pending or ContainerCreating, never
        # Running before its postStart hook (2 s) has finished
        hook = {"postStart": {"exec": {"command": ["sh", "-c", "sleep 2"]}}}
        watch_out = tmp_path / "watch.out"
        async with background(k, watch_out, "get", "pods", "-w", "-l", "app=hooked"):
            await anyio.sleep(0.5)  # the watch is listening
            await k.ok("apply", "-f", "-", stdin=json.dumps(pod("hooked", image, lifecycle=hook)))
            first = row(await k.ok("get", "pods"), "hooked")
            assert first[1:3] in (["0/1", "Pending"], ["0/1", "ContainerCreating"]), first
            await wait_for_text(watch_out, "Running")
        statuses = [cells[2] for cells in map(str.split, watch_out.read_text().splitlines()[1:])]
        assert "ContainerCreating" in statuses, statuses
        assert statuses[-1] == "Running"
        assert statuses.index("ContainerCreating") < statuses.index("Running")

        # create -f with generateName: the server names it
        generated = {
            **pod("job", image),
            "metadata": {"generateName": "job-", "labels": {"app": "gen"}},
        }
        created = (
            await k.ok("create", "-f", "-", "-o", "name", stdin=json.dumps(generated))
        ).strip()
        assert created.startswith("pod/job-")
        assert len(created) == len("pod/job-") + 5
        again = (await k.ok("create", "-f", "-", "-o", "name", stdin=json.dumps(generated))).strip()
        assert again != created

        # output formats
        assert sorted((await k.ok("get", "pods", "-l", "app=gen", "-o", "name")).split()) == sorted(
            [created, again]
        )
        columns = await k.ok(
            "get", "pods", "-o", "custom-columns=NAME:.metadata.name,GEN:.metadata.generateName"
        )
        assert row(columns, created.removeprefix("pod/")) == [created.removeprefix("pod/"), "job-"]
        assert row(columns, "hooked") == ["hooked", "<none>"]
        wide = await k.ok("get", "pods", "-o", "wide")
        assert wide.split()[:9] == [
            "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE",
        ]  # fmt: skip
        assert row(wide, "hooked")[6] == "node-1"
        phases = await k.ok(
            "get",
            "pods",
            "-o",
            'jsonpath={range .items[*]}{.metadata.name}={.spec.nodeName}{"\\n"}{end}',
        )
        assert "hooked=node-1" in phases.splitlines()
        by_age = await k.ok("get", "pods", "--sort-by=.metadata.creationTimestamp", "-o", "name")
        assert by_age.split()[0] == "pod/hooked"

        # wait --for=delete, while delete -f removes a multi-object file
        many = documents(*other_kinds()[:4], pod("member", image), other_kinds()[4])
        await k.ok("apply", "-f", "-", stdin=many)
        await k.ok("wait", "--for=condition=Ready", "pod/member", f"--timeout={int(WAIT)}s")
        async with await anyio.open_process(
            k.argv("wait", "--for=delete", "pod/member", "--timeout=30s"), env=k.env
        ) as waiter:
            await anyio.sleep(0.5)
            deleted = await k.ok("delete", "-f", "-", stdin=many)
            assert deleted.splitlines() == [
                'configmap "cfg" deleted',
                'secret "sec" deleted',
                'service "svc" deleted',
                'serviceaccount "sa" deleted',
                'pod "member" deleted',
                'runtimeclass.node.k8s.io "rc" deleted',
            ]
            with anyio.fail_after(WAIT):
                assert await waiter.wait() == 0
        assert "member" not in await k.ok("get", "pods")

        # delete --grace-period=0 --force of running pods
        forced = await k.run("delete", "pod", "-l", "app=gen", "--grace-period=0", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "Immediate deletion does not wait" in forced.stderr
        assert f'pod "{created.removeprefix("pod/")}" force deleted' in forced.stdout
        assert (await k.ok("get", "pods", "-l", "app=gen", "-o", "name")).strip() == ""

        # apply --prune needs an allowlist (the default one names kinds not served)
        await k.ok(
            "apply", "-f", "-", stdin=documents(configmap("pa", set="p"), configmap("pb", set="p"))
        )
        pruned = await k.ok(
            "apply", "--prune", "-l", "set=p", "--prune-allowlist=core/v1/ConfigMap", "-f", "-",
            stdin=json.dumps(configmap("pa", set="p")),
        )  # fmt: skip
        assert pruned.splitlines() == ["configmap/pa unchanged", "configmap/pb pruned"]


async def test_events_describe_namespaces_and_discovery(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    image = await busybox(registry)
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        # get events --watch-only sees the new pod's events as the kubelet records them
        events_out = tmp_path / "events.out"
        async with background(k, events_out, "get", "events", "--watch-only"):
            await anyio.sleep(0.5)
            await k.ok("apply", "-f", "-", stdin=json.dumps(pod("web", image)))
            await wait_for_text(events_out, "Started container app")
        assert "pod/web" in events_out.read_text()

        # describe of every served kind
        objects = documents(*other_kinds())
        await k.ok("apply", "-f", "-", stdin=objects)
        expected = {
            "pod/web": "Started container app",
            "secret/sec": "p:  8 bytes",
            "serviceaccount/sa": "Image pull secrets:  <none>",
            "service/svc": "ClusterIP\n",  # describe aligns its columns to the longest key
            "service/kubernetes": "10.96.0.1\n",
            "configmap/cfg": "Data\n====\nk:",
            "runtimeclass/rc": "Handler:      sim",
        }
        for what, text in expected.items():
            assert text in await k.ok("describe", what), what
        event = (await k.ok("get", "events", "-o", "name")).split()[0]
        assert "Involved Object:" in await k.ok("describe", event)
        assert "hunter22" not in await k.ok("describe", "secret", "sec")

        everything = await k.ok("get", "all")
        assert row(everything, "pod/web")[1:3] == ["1/1", "Running"]
        assert row(everything, "service/kubernetes")[1:3] == ["ClusterIP", "10.96.0.1"]

        # -n: secrets are of their namespace; a pull secret of another namespace is not used
        await k.ok("-n", "team-a", "create", "secret", "generic", "only-a", "--from-literal=a=bbb")
        assert row(await k.ok("-n", "team-a", "get", "secrets"), "only-a")[1] == "Opaque"
        assert 'secrets "only-a" not found' in await k.fails("get", "secret", "only-a")
        assert 'secrets "only-a" not found' in await k.fails(
            "-n", "team-b", "get", "secret", "only-a"
        )
        every = await k.ok("get", "secrets", "-A")
        assert row(every, "team-a")[1:2] == ["only-a"]
        await k.ok(
            "-n", "team-a", "create", "secret", "docker-registry", "regcred",
            f"--docker-server={registry.host}", "--docker-username=u", "--docker-password=p",
        )  # fmt: skip
        other = pod("elsewhere", image, imagePullPolicy="Always")
        other["metadata"]["namespace"] = "team-b"
        other["spec"]["imagePullSecrets"] = [{"name": "regcred"}]
        await k.ok("apply", "-f", "-", stdin=json.dumps(other))
        described = await k.until(
            lambda out: "FailedToRetrieveImagePullSecret" in out,
            "-n", "team-b", "describe", "pod", "elsewhere",
            what="the missing pull secret reported",
        )  # fmt: skip
        assert "Unable to retrieve some image pull secrets (regcred)" in described
        assert "elsewhere" not in await k.ok("get", "pods")  # default namespace only
        assert row(await k.ok("get", "sa", "-n", "team-b"), "default")

        # discovery and version
        version = await k.ok("version")
        assert "Server Version: v1.32.0-kubelet-sim" in version
        kinds = {line.split()[-1] for line in (await k.ok("api-resources")).splitlines()[1:]}
        assert kinds == {
            "ConfigMap", "Event", "Pod", "Secret", "ServiceAccount", "Service", "RuntimeClass",
        }  # fmt: skip
        assert 'the server doesn\'t have a resource type "nodes"' in await k.fails("get", "nodes")
        assert "dryRun is not served by kubelet-sim" in await k.fails(
            "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(configmap("dry"))
        )


# -- found by this review, fixed ---------------------------------------------------------------


async def test_label_and_annotate_do_not_restart_containers(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    image = await busybox(registry)
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        await k.ok("apply", "-f", "-", stdin=json.dumps(pod("web", image)))
        await k.ok("wait", "--for=condition=Ready", "pod/web", f"--timeout={int(WAIT)}s")
        before = await container_id(k, "web")
        await k.ok("label", "pod", "web", "tier=front")
        await k.ok("annotate", "pod", "web", "note=hi")
        await anyio.sleep(1.5)  # two status passes: a restart would show by now
        events = await k.ok("get", "events", "--field-selector", "involvedObject.name=web")
        assert "Killing" not in events, events
        assert await container_id(k, "web") == before


async def test_force_delete_of_a_terminating_pod_ends_it_now(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    image = await busybox(registry)
    stuck = pod(
        "stuck",
        image,
        grace=40,
        lifecycle={"preStop": {"exec": {"command": ["sh", "-c", "sleep 40"]}}},
    )
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        await k.ok("apply", "-f", "-", stdin=json.dumps(stuck))
        await k.ok("wait", "--for=condition=Ready", "pod/stuck", f"--timeout={int(WAIT)}s")
        await k.ok("delete", "pod", "stuck", "--wait=false")
        assert row(await k.ok("get", "pods"), "stuck")[2] == "Terminating"
        forced = await k.run(
            "delete", "pod", "stuck", "--grace-period=0", "--force", "--timeout=8s"
        )
        assert forced.returncode == 0, forced.stderr
        assert "stuck" not in await k.ok("get", "pods")


async def test_a_terminating_pod_can_still_be_labelled(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    image = await busybox(registry)
    slow = pod(
        "slow", image, grace=20, lifecycle={"preStop": {"exec": {"command": ["sleep", "20"]}}}
    )
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        await k.ok("apply", "-f", "-", stdin=json.dumps(slow))
        await k.ok("wait", "--for=condition=Ready", "pod/slow", f"--timeout={int(WAIT)}s")
        await k.ok("delete", "pod", "slow", "--wait=false")
        labelled = await k.run("label", "pod", "slow", "triage=stuck")
        assert labelled.returncode == 0, labelled.stderr
        assert labelled.stdout.strip() == "pod/slow labeled"


async def test_a_selector_watch_sees_an_object_leave(tmp_path: Path) -> None:
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        await k.ok("apply", "-f", "-", stdin=json.dumps(configmap("w1", set="w")))
        out = tmp_path / "watch.out"
        args = ("get", "configmaps", "-l", "set=w", "-w", "--output-watch-events")
        async with background(k, out, *args):
            await wait_for_text(out, "ADDED")
            await k.ok("label", "configmap", "w1", "set=other", "--overwrite")
            with anyio.move_on_after(3):
                await wait_for_text(out, "DELETED")
        assert "DELETED" in out.read_text(), out.read_text()


async def test_lists_are_in_name_order(tmp_path: Path) -> None:
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        for name, namespace in (("zeta", "default"), ("alpha", "default"), ("mid", "aaa")):
            doc = configmap(name)
            doc["metadata"]["namespace"] = namespace
            await k.ok("apply", "-f", "-", stdin=json.dumps(doc))
        names = (await k.ok("get", "configmaps", "-o", "name")).split()
        assert names == ["configmap/alpha", "configmap/zeta"]
        every = [line.split()[:2] for line in (await k.ok("get", "cm", "-A")).splitlines()[1:]]
        assert every == [["aaa", "mid"], ["default", "alpha"], ["default", "zeta"]]


async def test_describe_service_shows_defaulted_protocol(tmp_path: Path) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        await k.ok("apply", "-f", "-", stdin=json.dumps(service))
        described = await k.ok("describe", "service", "web")
        assert "80/TCP" in described, described
        assert "8080/TCP" in described
        assert re.search(r"Session Affinity:\s+None\n", described), described
        ports = json.loads(await jsonpath(k, "service", "web", path="{.spec.ports}"))
        assert ports == [{"port": 80, "protocol": "TCP", "targetPort": 8080}]


async def test_explain_fails_clearly(tmp_path: Path) -> None:
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        explained = await k.fails("explain", "pod")
        assert "nil pointer" not in explained, explained
        assert "template:" not in explained


async def test_logs_and_exec_say_they_are_not_served(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    image = await busybox(registry)
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        await k.ok("apply", "-f", "-", stdin=json.dumps(pod("web", image)))
        logs = await k.fails("logs", "web")
        assert "not served" in logs, logs
        assert "not served" in await k.fails("exec", "web", "--", "true")


async def test_create_namespace_succeeds_or_says_namespaces_are_implicit(tmp_path: Path) -> None:
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        created = await k.run("create", "namespace", "team-a")
        assert created.returncode == 0 or "not served" in created.stderr, created.stderr


async def test_auth_can_i_answers(tmp_path: Path) -> None:
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        done = await k.run("auth", "can-i", "create", "pods")
        assert done.stdout.strip() == "yes" or "not served" in done.stderr, done.stderr
