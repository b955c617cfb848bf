"""``report.md``: the bench report for people, readable without the source.

It says what ran (nodes and their kubelet settings, pods and how they arrived, faults), the headline
figures, breakdowns by node group and pod template, registry answers and kubelet events, the plots
with a caption saying how to read each, and a glossary of every figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubelet_sim.workloads.outputs import PLOT_FILES
from kubelet_sim.workloads.spec import human_bytes

PLOTS = (
    (PLOT_FILES["timeline"], "Pull timeline per node",
     "One row per node (a sample of at most 60 nodes for large runs); each bar is one image pull "
     "from the moment the puller started it to its end, coloured by image (the legend), failed "
     "pulls marked. Gaps inside a row are time the node spent queueing or in back-off; "
     "overlapping bars show parallel pulls; back-to-back pulls are separate bars."),
    (PLOT_FILES["pull_latency"], "Pull duration per image (CDF)",
     "For each image (the most pulled ones), the share of its successful pulls (y) that took at "
     "most x seconds, from the puller's start to the image being stored."),
    (PLOT_FILES["time_to_ready"], "Pod time to images ready (CDF)",
     "For each node group, the share of pods (y) whose images were all ready within x seconds of "
     "the pod's arrival. Steeper and further left is better; the dotted lines mark p50 and p99 "
     "over all pods."),
    (PLOT_FILES["bytes"], "Bytes served over time",
     "Top: bytes the nodes received from the registry per second. Bottom: cumulative bytes. With "
     "the fault proxy, shaded spans mark the fault windows."),
    (PLOT_FILES["requests"], "Registry requests and errors over time",
     "Registry answers the nodes got per second: all requests, error answers (429 and 5xx) and "
     "requests that got no answer (connection resets, timeouts); fault windows shaded."),
)  # fmt: skip

REGISTRY_PLOT = (
    PLOT_FILES["registry_view"], "The modelled registry over simulated time",
    "Virtual runs only. Top: requests, error answers and resets, and tokens issued per second. "
    "Middle: bytes sent per second. Bottom: the most requests and bodies in flight in each "
    "second. Shaded spans mark the fault windows; the spike after an outage is the nodes' "
    "retries when it ends.",
)  # fmt: skip

GLOSSARY = (
    ("time to images ready", "per pod, from its arrival (submission to the node) until every "
     "init and app container image was present; percentiles over every pod, those that never got "
     "there counted as slowest (\"not ready\": the percentile fell among them)"),
    ("makespan", "from the first pod's arrival to the last pod's images being ready (none when "
     "some pod never got there)"),
    ("simulator health", "event-loop lag (how late a 20 ms heartbeat woke), dispatch delay (a "
     "pull's start to its first registry request), CPU per process, and the client-side share "
     "of the pulls' time; above 10 % the figures describe the simulator more than the registry"),
    ("arrival lag", "how late the bench submitted pods against their planned arrival times; "
     "more than a few milliseconds means this machine could not keep up with the workload and "
     "the latencies include the simulator's own queueing"),
    ("pulls", "runtime PullImage calls the kubelets made (queued pulls count once they start); "
     "failed pulls end in ErrImagePull and back-off"),
    ("registry pulls / shared", "pulls that went to the registry, and identical pulls that joined "
     "one already in flight on the same node"),
    ("cache hits", "EnsureImageExists calls answered by an image already on the node "
     "(\"already present on machine\")"),
    ("bytes pulled", "layer bytes committed to the nodes' stores"),
    ("registry requests", "HTTP answers the nodes got (by status; \"none\" = no answer)"),
    ("backoffs", "times a pod's sync found its image in ImagePullBackOff (BackOff events)"),
    ("peak pulls in flight", "most pulls one node ran at the same time (1 with serial pulls)"),
    ("CPU, peak memory", "of the whole bench process (all nodes) during the run; peak memory "
     "is the resident-set high-water mark"),
)  # fmt: skip


def _s(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "not ready"
    return f"{value:.3f} {unit}" if value < 10 else f"{value:.1f} {unit}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return [*out, ""]


def _kubelet_text(k: dict[str, Any]) -> str:
    mode = (
        "serial"
        if k["serializeImagePulls"]
        else f"parallel (max {k['maxParallelImagePulls'] or '∞'})"
    )
    qps = (
        "no QPS limit"
        if not k["registryPullQPS"]
        else f"QPS {k['registryPullQPS']:g}/burst {k['registryBurst']}"
    )
    return f"{mode}, {qps}"


def _model_text(model: dict[str, Any]) -> str:
    def rate(v: float) -> str:
        return f"{human_bytes(v)}/s" if v else "no limit"

    concurrency = model["concurrency"] or "no limit"
    return (
        f"latency {model['latency']}, per body {rate(model['per_connection_bytes_per_second'])}, "
        f"egress {rate(model['total_bytes_per_second'])}, concurrency {concurrency}, auth "
        f"{model['auth']}"
    )


def _registry_view(view: dict[str, Any], health: dict[str, Any]) -> list[str]:
    """A virtual run's registry side: the model, its totals and each outage's retry spike."""
    totals = view["totals"]
    lines = ["## The modelled registry (virtual time)", ""]
    lines += [
        f"Simulated {health.get('simulated_seconds', 0):g} s in "
        f"{health.get('simulated_seconds', 0) / (health.get('speedup') or 1):.1f} s of wall time "
        f"({health.get('speedup')}x real time). Model: {_model_text(view['model'])}.",
        "",
    ]
    lines += _table(
        ("figure", "value"),
        [
            ("requests (all, tokens included)", totals["requests"]),
            ("answers", ", ".join(f"{k}: {v}" for k, v in totals["answers"].items()) or "none"),
            ("bytes sent", f"{human_bytes(totals['bytes'])} ({totals['bytes']:,} B)"),
            ("errors and resets", totals["errors"]),
            ("tokens issued", totals["tokens_issued"]),
            ("peak requests per second", view["peak_requests_per_second"]),
            ("peak bytes per second", human_bytes(view["peak_bytes_per_second"]) + "/s"),
            ("peak requests in flight / bodies", f"{totals['peak_in_flight']} / "
             f"{totals['peak_bodies']}"),
            ("requests that waited for a slot", totals["queued_for_a_slot"]),
        ],
    )  # fmt: skip
    if view["outages"]:
        lines += ["Outages and the retry spike after each (the thundering herd):", ""]
        lines += _table(
            ("outage", "requests during (reset)", "req/s before", "peak req/s after",
             "peak at", "requests in the first 60 s after", "peak / before"),
            [
                (f"{o['start']:g} s – {o['end']:g} s", f"{o['requests_during']} "
                 f"({o['resets_during']})", o["requests_per_second_before"],
                 o["peak_requests_per_second_after"], f"+{o['peak_seconds_after_end']} s",
                 o["requests_first_60s_after"], o["peak_over_before"] or "n/a")
                for o in view["outages"]
            ],
        )  # fmt: skip
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    w, run, s = report["workload"], report["run"], report["summary"]
    ttr = s["time_to_ready"]
    lines = [f"# Bench report: {w['name']}", ""]
    if w["description"]:
        lines += [w["description"].strip(), ""]
    via = " through the fault proxy" if run["via_fault_proxy"] else ""
    end = (f"stopped at the {run['timeout']:g} s timeout with {s['pods_not_ready']} pods not ready"
           if run["timed_out"] else "stopped when every pod was settled")  # fmt: skip
    if run.get("interrupted"):
        end = f"**interrupted** with {s['pods_not_ready']} pods not ready (a partial report)"
    lines += [
        f"Ran {run['started_at']} on {run['machine']} (Python {run['python']}, kubelet-sim "
        f"{run['kubelet_sim']}): {s['nodes']} simulated nodes pulled from the registry at "
        f"`{run['registry']}`{via}; {s['pods']} pods; {end} after {run['stopped_at']:.1f} s. "
        f"Workload file `{w['file']}` (seed {w['seed']}, sha256 `{w['sha256'][:12]}`).",
        "",
        "## Headline figures",
        "",
    ]
    res = s["resources"]
    h = s["health"]
    requests = ", ".join(f"{k}: {v}" for k, v in s["registry_requests_by_status"].items()) or "none"
    lines += _table(
        ("figure", "value"),
        [
            ("pods ready", f"{s['pods_ready']} of {s['pods']}"),
            ("time to images ready p50 / p90 / p99 / max",
             " / ".join(_s(ttr[k]) for k in ("p50", "p90", "p99", "max"))),
            ("makespan", _s(s["makespan"])),
            ("arrival lag max (simulator health)", _s(s["arrival_lag"]["max"])),
            ("simulator: loop lag p99 / dispatch p50 / client share",
             f"{_ms(h['loop_lag']['p99_ms'])} / {_ms(h['dispatch_delay']['p50_ms'])} / "
             f"{_pct(h['client_wait_share'])}"),
            ("processes (shards)", res.get("processes", 1)),
            ("pulls (failed)", f"{s['pulls']} ({s['pull_errors']})"),
            ("registry pulls / shared", f"{s['registry_pulls']} / {s['shared_pulls']}"),
            ("cache hits", s["cache_hits"]),
            ("bytes pulled", f"{human_bytes(s['bytes_pulled'])} ({s['bytes_pulled']:,} B)"),
            ("registry requests", f"{s['registry_requests']} ({requests})"),
            ("registry retries", s["registry_retries"]),
            ("backoffs", s["backoffs"]),
            ("peak pulls in flight (max over nodes)", s["peak_pulls_in_flight_max"]),
            ("CPU (user + system)", f"{res['cpu_seconds']:.2f} s ({res['cpu_user_seconds']:.2f} + "
             f"{res['cpu_system_seconds']:.2f})"),
            ("peak memory (RSS)", f"{res['peak_rss_mib']:.0f} MiB"),
        ],
    )  # fmt: skip
    for warning in h["warnings"]:
        lines += [f"**Warning:** {warning}.", ""]
    lines += _churn(s)
    lines += _breakdowns(s)
    thresholds = s.get("thresholds", [])
    if thresholds:
        failed = sum(1 for t in thresholds if not t["passed"])
        lines += ["## Thresholds", ""]
        lines += _table(
            ("threshold", "value", "result"),
            [
                (f"`{t['threshold']}`", "no value" if t["value"] is None else f"{t['value']:g}",
                 "pass" if t["passed"] else f"**FAIL**{' (' + t['note'] + ')' if t.get('note') else ''}")
                for t in thresholds
            ],
        )  # fmt: skip
        lines += [f"{failed} of {len(thresholds)} failed." if failed else "All passed.", ""]
    if s["waiting_reasons"]:
        lines += ["Containers still waiting at the end, by reason: " + ", ".join(
            f"{k} ({v})" for k, v in s["waiting_reasons"].items()) + ".", ""]  # fmt: skip
    lines += ["## By node group", ""]
    rows = []
    for name, g in report["groups"].items():
        t = g["time_to_ready"]
        rows.append((
            name, g["nodes"], g["platform"], g["cache"], _kubelet_text(g["kubelet"]),
            f"{g['pods_ready']}/{g['pods']}", _s(t["p50"]), _s(t["p90"]), _s(t["p99"]),
            _s(t["max"]), _s(g["makespan"]), f"{g['pulls']} ({g['pull_errors']})",
            g["cache_hits"], human_bytes(g["bytes_pulled"]), g["peak_pulls_in_flight_max"],
        ))  # fmt: skip
    lines += _table(
        ("group", "nodes", "platform", "cache", "kubelet", "ready", "p50", "p90", "p99", "max",
         "makespan", "pulls (failed)", "cache hits", "bytes", "peak in flight"),
        rows,
    )  # fmt: skip
    lines += ["## By pod template", ""]
    lines += _table(
        ("template", "pods", "images", "arrival", "placement", "p50", "p99", "max"),
        [
            (name, t["pods"], ", ".join(f"`{i}`" for i in t["images"]), t["arrival"],
             t["placement"], _s(t["time_to_ready"]["p50"]), _s(t["time_to_ready"]["p99"]),
             _s(t["time_to_ready"]["max"]))
            for name, t in report["templates"].items()
        ],
    )  # fmt: skip
    if report["images"]["pod_images_not_seeded"]:
        lines += ["Pod images the workload does not seed (expected to fail): "
                  + ", ".join(f"`{i}`" for i in report["images"]["pod_images_not_seeded"]), ""]  # fmt: skip
    lines += ["## Registry answers", ""]
    lines += _table(
        ("method status", "answers"), list(s["registry_requests_by_method_status"].items())
    )
    lines += ["## Kubelet events by reason", "", "Emitted by the nodes' image managers and pod "
              "workers (before the event spam filter).", ""]  # fmt: skip
    lines += _table(("reason", "events"), list(s["events_by_reason"].items()))
    faults = report["faults"]
    if faults["plan"]:
        lines += ["## Faults injected", ""]
        lines += _table(
            ("kind", "window", "details"),
            [
                (f["kind"], f"{f.get('start', 0):g} s – " + (f"{f['end']:g} s" if f.get("end") else "end"),
                 ", ".join(f"{k}={v}" for k, v in f.items() if k not in ("kind", "start", "end")))
                for f in faults["plan"]
            ],
        )  # fmt: skip
        if "proxy" in faults:
            lines += _table(("proxy counter", "value"), list(faults["proxy"].items()))
    if "registry_view" in report:
        lines += _registry_view(report["registry_view"], s["health"])
    lines += ["## Plots", ""]
    drawn = {name.rsplit("/", 1)[-1] for name in report.get("plots") or ()}
    for file, title, caption in (*PLOTS, REGISTRY_PLOT):
        if file in drawn:  # none with --no-plots: no link to a file that is not there
            lines += [f"### {title}", "", f"![{title}]({file})", "", caption, ""]
    if not drawn:
        lines += ["None drawn for this report (`--no-plots`).", ""]
    lines += ["## How to read this report", ""]
    lines += [f"- **{term}**: {text}" for term, text in GLOSSARY]
    lines += ["", "Every figure is measured in this run; `report.json` holds the raw pods, pulls "
              "and per-node figures (with each node's own Prometheus samples beside them)."]  # fmt: skip
    return "\n".join(lines) + "\n"


_CHURN_WHAT = {
    "delete": lambda c: (
        f"deleted {c.get('deleted', 0)} `{c.get('pods', '')}` pods ({c.get('ready', 0)} ready)"
    ),
    "rollout": lambda c: (
        f"`{c.get('pods', '')}` to `{c.get('image', '')}`: "
        f"{c.get('replicas', 0)} replicas, surge {c.get('max_surge', 0)}, unavailable "
        f"{c.get('max_unavailable', 0)}; {c.get('created', 0)} created, {c.get('deleted', 0)} deleted,"
        f" at most {c.get('peak_pods', 0)} pods, at least {c.get('min_ready', 0)} ready"
    ),
    "restart": lambda c: (
        f"{c.get('nodes', 0)} kubelets down {c.get('downtime', 0):g} s; "
        f"{c.get('pods_reapplied', 0)} waiting pods re-applied, {c.get('pods_kept_running', 0)} "
        "ready pods kept running"
    ),
    "retag": lambda c: (
        f"`{c.get('image', '')}` moved from `{str(c.get('from', '?'))[:19]}` to "
        f"`{str(c.get('to', '?'))[:19]}`"
    ),
}


def _churn(s: dict[str, Any]) -> list[str]:
    """The churn section: what each action did and how long it took."""
    churn: dict[str, dict[str, Any]] = s.get("churn") or {}
    if not churn:
        return []
    lines = ["## Churn", ""]
    if s.get("pods_deleted"):
        lines += [f"{s['pods_deleted']} pods deleted ({s.get('pods_deleted_unready', 0)} before "
                  "they were ready: not in the time-to-ready figures).", ""]  # fmt: skip
    rows = []
    for name, c in churn.items():
        what = _CHURN_WHAT.get(str(c.get("kind")), lambda c: "")(c)
        if c.get("error"):
            what = f"**failed**: {c['error']}"
        at, started, finished, took = (c.get(k) for k in ("at", "started", "finished", "seconds"))
        rows.append((name, c.get("kind", ""), _s(at), "–" if started is None else _s(started),
                     "not done" if finished is None else _s(finished),
                     "–" if took is None else _s(took), what))  # fmt: skip
    lines += _table(("action", "kind", "at", "started", "finished", "took", "what"), rows)
    return lines


def _breakdowns(s: dict[str, Any]) -> list[str]:
    """Pulls by image, the slowest nodes, failed pulls by cause, and the registry as the nodes'
    own histograms saw it (absent from reports made before these figures existed)."""
    lines: list[str] = []
    images: dict[str, dict[str, Any]] = s.get("by_image") or {}
    if images:
        lines += ["## Pulls by image", "", "Each runtime pull, from the puller's start to the "
                  "image being stored (successful pulls only in the durations).", ""]  # fmt: skip
        lines += _table(
            ("image", "pulls", "failed", "pulled", "p50", "p90", "max"),
            [(f"`{name}`", i["pulls"], i["failed"], human_bytes(i["bytes"]),
              *(_dash(i["seconds"][k]) for k in ("p50", "p90", "max")))
             for name, i in images.items()],
        )  # fmt: skip
    nodes: list[dict[str, Any]] = s.get("slowest_nodes") or []
    if nodes:
        lines += ["## Slowest nodes", "", "By pods not ready, then by the slowest pod's time to "
                  "images ready.", ""]  # fmt: skip
        lines += _table(
            ("node", "group", "pods", "not ready", "p50", "max", "pulls (failed)", "mean pull"),
            [(n["node"], n["group"], n["pods"], n["not_ready"], _s(n["time_to_ready"]["p50"]),
              _s(n["time_to_ready"]["max"]), f"{n['pulls']} ({n['pull_errors']})",
              _dash(n["pull_seconds_mean"])) for n in nodes],
        )  # fmt: skip
    causes: dict[str, int] = s.get("failure_causes") or {}
    if causes:
        lines += ["## Failed pulls by cause", "", "Each pod's failed pull (ErrImagePull), by what "
                  "ended it; `qps` is a pull the node's registryPullQPS throttle refused.", ""]  # fmt: skip
        lines += _table(("cause", "failed pulls"), list(causes.items()))
    ttfb = s.get("registry_ttfb")
    if ttfb and ttfb.get("count"):
        lines += ["## The registry as the nodes saw it", ""]
        lines += _table(
            ("figure", "value"),
            [("requests answered", ttfb["count"]),
             ("time to first byte mean / p50 / p90 / p99",
              " / ".join(_dash(ttfb[k]) for k in ("mean", "p50", "p90", "p99"))),
             ("peak requests per second", s.get("registry_peak_requests_per_second", 0)),
             ("peak errors and unanswered per second", s.get("registry_peak_errors_per_second", 0))],
        )  # fmt: skip
        sizes: dict[str, dict[str, Any]] = s.get("pull_duration_by_size") or {}
        if sizes:
            lines += ["`kubelet_image_pull_duration_seconds` by `image_size_in_bytes` (the "
                      "kubelet's own histogram, over the nodes; quantiles as Prometheus' "
                      "`histogram_quantile` reads its buckets):", ""]  # fmt: skip
            lines += _table(
                ("image size", "pulls", "mean", "p50", "p90", "p99"),
                [(size, h["count"], *(_dash(h[k]) for k in ("mean", "p50", "p90", "p99")))
                 for size, h in sizes.items()],
            )  # fmt: skip
        lines += ["Time to first byte is each request's time from sending to its answer's "
                  "headers (the nodes' `kubelet_sim_registry_request_duration_seconds`).",
                  ""]  # fmt: skip
    return lines


def _dash(value: float | None) -> str:
    return "–" if value is None else _s(value)
