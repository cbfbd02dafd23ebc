"""The optimize report: report.json, report.md and two PNG plots in the artifact directory.

What a user reads to see the trade-off: every candidate's score, latency by
batch size and size, which one shipped and why, and the CPU it was measured on.
"""

from __future__ import annotations

import json
from pathlib import Path

from optimize.manifest import Manifest

# CPU features that decide whether int8 pays off (VNNI/AMX) or fp16/bf16 runs natively.
RELEVANT_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                  "avx512_fp16", "amx_int8", "amx_bf16")


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in RELEVANT_FLAGS if flag in present]
    except OSError:
        pass
    return []


def write_report(manifest: Manifest, artifact_dir: Path) -> list[Path]:
    """Write the report files next to the model; returns their paths."""
    artifact_dir = Path(artifact_dir)
    shipped = _shipped_name(manifest)
    data = {
        "model": manifest.name, "version": manifest.version, "metric": manifest.metric, "shipped": shipped,
        "machine": manifest.machine, "cpu_flags": cpu_flags(), "batch_deviation": manifest.batch_deviation,
        "candidates": [candidate.model_dump() for candidate in manifest.candidates],
    }
    paths = [artifact_dir / "report.json", artifact_dir / "report.md"]
    paths[0].write_text(json.dumps(data, indent=2) + "\n")
    paths[1].write_text(_markdown(manifest, data))
    return paths + _plots(manifest, artifact_dir)


def _shipped_name(manifest: Manifest) -> str:
    for candidate in manifest.candidates:
        if candidate.accepted and candidate.measurement == manifest.after:
            return candidate.name
    return "fp32"


def _markdown(manifest: Manifest, data: dict) -> str:
    sizes = sorted({b for c in manifest.candidates for b in c.measurement.latency_ms})
    lines = [
        f"# {manifest.name} {manifest.version}: optimize report", "",
        f"Measured on {manifest.machine} (flags: {', '.join(data['cpu_flags']) or 'unknown'}), {manifest.created_at}.",
        f"Shipped: **{data['shipped']}**. Batch deviation of the shipped model: {manifest.batch_deviation:.2e}.", "",
        f"| candidate | runtime | {manifest.metric} (mean) | worst | " + " | ".join(f"ms @ b{b}" for b in sizes)
        + " | size MB | batch deviation | verdict |",
        "|---|---|---|---|" + "---|" * len(sizes) + "---|---|---|",
    ]
    for candidate in manifest.candidates:
        m = candidate.measurement
        worst = "" if m.worst is None else f"{m.worst:.4f}"
        timings = " | ".join(f"{m.latency_ms[b]:.3f}" if b in m.latency_ms else "not timed" for b in sizes)
        verdict = ("accepted" if candidate.accepted else "rejected") + f": {candidate.reason}"
        deviation = "" if m.batch_deviation is None else f"{m.batch_deviation:.1e}"
        lines.append(f"| {candidate.name} | {candidate.runtime} | {m.accuracy:.4f} | {worst} | {timings} | "
                     f"{m.size_bytes / 1e6:.2f} | {deviation} | {verdict} |")
    lines += ["", "Latencies are medians of runs interleaved with fp32's. A candidate ships only if it is faster "
              "than fp32 beyond the measured spread (optimize/speed.py; docs/optimizing.md) and slower at no batch "
              "size; a clearly slower one is timed no further.",
              "", "Plots: latency.png (latency against batch size), accuracy_size.png (score against size).", ""]
    return "\n".join(lines)


def _plots(manifest: Manifest, artifact_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latency, trade_off = artifact_dir / "latency.png", artifact_dir / "accuracy_size.png"
    figure, axes = plt.subplots(figsize=(6, 4))
    for candidate in manifest.candidates:
        sizes = sorted(candidate.measurement.latency_ms)
        axes.plot(sizes, [candidate.measurement.latency_ms[b] for b in sizes], marker="o", label=candidate.name)
    axes.set(xlabel="batch size", ylabel="median latency (ms)", xscale="log", yscale="log",
             title=f"{manifest.name}: latency by batch size")
    axes.legend()
    figure.tight_layout()
    figure.savefig(latency, dpi=100)
    plt.close(figure)
    figure, axes = plt.subplots(figsize=(6, 4))
    for candidate in manifest.candidates:
        m = candidate.measurement
        axes.scatter(m.size_bytes / 1e6, m.accuracy, marker="o" if candidate.accepted else "x")
        axes.annotate(candidate.name, (m.size_bytes / 1e6, m.accuracy), fontsize=8)
    axes.set(xlabel="size (MB)", ylabel=manifest.metric, title=f"{manifest.name}: score against size (x: rejected)")
    figure.tight_layout()
    figure.savefig(trade_off, dpi=100)
    plt.close(figure)
    return [latency, trade_off]
