"""The plot of a soak run (matplotlib, imported only here): servers running and culls, the culler's RSS, open FDs and
trio tasks with their least-squares fits after warm-up, and the status page's latency; every fault shaded."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from soak_oracle import Verdict
from soak_timeline import Timeline

__all__ = ["plot"]

FAULT_COLOURS = {
    "hub_restart": "tab:red",
    "proxy_restart": "tab:orange",
    "hub_503": "tab:purple",
    "race": "tab:brown",
    "hang": "tab:gray",
    "hostile": "tab:olive",
}


def plot(timeline: Timeline, verdict: Verdict, path: Path) -> None:
    start = timeline.started

    def minutes(t: float) -> float:
        return (t - start) / 60

    samples = timeline.samples
    fig, axes = plt.subplots(5, 1, sharex=True, figsize=(12, 13))
    ax_servers, ax_rss, ax_fds, ax_tasks, ax_status = axes

    ax_servers.plot([minutes(s.time) for s in samples], [s.servers_running for s in samples], color="tab:blue")
    ax_servers.set_ylabel("servers running")
    culls = sorted(d.sent for d in timeline.deletes if not d.injected and d.status in (200, 202, 204))
    twin = ax_servers.twinx()
    if culls:
        bins = max(1, int(minutes(timeline.ended)) + 1)
        twin.hist([minutes(t) for t in culls], bins=bins, range=(0, bins), color="tab:green", alpha=0.35)
    twin.set_ylabel("culls per minute", color="tab:green")
    title = f"trio-culler soak: {minutes(timeline.ended):.0f} min, {verdict.culls} culls, " + (
        "every invariant holds" if verdict.ok else f"{len(verdict.broken)} invariant(s) broken"
    )
    ax_servers.set_title(title)

    warmup = start + timeline.params.warmup
    for axis, name, label in (
        (ax_rss, "rss_mib", "RSS (MiB)"),
        (ax_fds, "fds", "open FDs"),
        (ax_tasks, "tasks", "trio tasks"),
    ):
        points = [(s.time, getattr(s, name)) for s in samples if getattr(s, name) is not None]
        axis.plot([minutes(t) for t, _ in points], [v for _, v in points], color="tab:blue", linewidth=0.8)
        fit = verdict.resources[name]
        kept = [(t, v) for t, v in points if t >= warmup]
        if fit["slope_per_hour"] is not None and kept:
            mean_t = sum(t for t, _ in kept) / len(kept)
            mean_v = sum(v for _, v in kept) / len(kept)
            slope = fit["slope_per_hour"] / 3600
            ends = (kept[0][0], kept[-1][0])
            axis.plot(
                [minutes(t) for t in ends],
                [mean_v + slope * (t - mean_t) for t in ends],
                color="black",
                linestyle="--",
                label=f"fit after warm-up: {fit['slope_per_hour']:+.2f}/h",
            )
            axis.legend(loc="upper left", fontsize="small")
        axis.axvline(minutes(warmup), color="black", linewidth=0.5, linestyle=":")
        axis.set_ylabel(label)

    probes = [p for p in timeline.status if p.kind == "api"]
    ok = [p for p in probes if p.ok]
    failed = [p for p in probes if not p.ok]
    ax_status.scatter([minutes(p.time) for p in ok], [p.latency * 1000 for p in ok], s=2, color="tab:blue")
    ax_status.scatter(
        [minutes(p.time) for p in failed],
        [max(p.latency * 1000, 1) for p in failed],
        s=12,
        color="tab:red",
        marker="x",
        label="failed",
    )
    ax_status.set_yscale("log")
    ax_status.set_ylabel("api/status latency (ms)")
    ax_status.set_xlabel("minutes")
    if failed:
        ax_status.legend(loc="upper left", fontsize="small")

    seen: set[str] = set()
    for fault in timeline.faults:
        colour = FAULT_COLOURS.get(fault.kind, "tab:pink")
        for axis in axes:
            span_label: str | None = fault.kind if axis is ax_servers and fault.kind not in seen else None
            axis.axvspan(
                minutes(fault.start),
                minutes(max(fault.end, fault.start + 6)),
                color=colour,
                alpha=0.2,
                label=span_label,
            )
        seen.add(fault.kind)
    if seen:
        handles, labels = ax_servers.get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(seen), title="faults")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
