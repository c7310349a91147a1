"""Draw the benchmark charts (docs/bench-*.png) from bench/results/*.json.

    python -m bench chart

Needs matplotlib (``pip install -e '.[bench]'``). ``overhead`` and ``store`` call this too.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import DOCS, load_result

CONCURRENCY = ("1", "16", "64")


def _label(name: str) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(name.replace(",", ""), 14))


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def store_chart(result: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    sizes = sorted(result["sizes"], key=int)
    xs = [int(s) for s in sizes]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    styles = {"vector": "tab:blue", "fulltext": "tab:orange", "memory.search": "tab:green"}
    for name, color in styles.items():
        p50 = [result["sizes"][s]["search"][name]["p50"] for s in sizes]
        p99 = [result["sizes"][s]["search"][name]["p99"] for s in sizes]
        ax.plot(xs, p50, "o-", color=color, label=f"{name} p50")
        ax.plot(xs, p99, "s--", color=color, alpha=0.6, label=f"{name} p99")
    ax.axhline(10, color="grey", lw=0.8, ls=":")
    ax.text(xs[-1], 10.3, "goal: p99 ≤ 10 ms at 1M", fontsize=7, color="grey", ha="right")
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:,}" for x in xs])
    ax.set_xlabel("memories in the store (caller holds 200; ~200 per user)")
    ax.set_ylabel("per-user search latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("memproxy: per-user search latency vs store size", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    fig.text(
        0.01,
        0.01,
        f"{result['date']} · {result['commit']} · {result['machine'][:70]}",
        fontsize=6,
        color="grey",
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def overhead_chart(result: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    names = [n for n in result["order"] if n != "direct"]
    direct = result["targets"]["direct"]["wrk"]["1"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120)
    width = 0.27
    for i, q in enumerate((50, 95, 99)):
        vals = [
            max(result["targets"][n]["wrk"]["1"][f"p{q}_ms"] - direct[f"p{q}_ms"], 0.01)
            for n in names
        ]
        bars = ax1.bar([k + (i - 1) * width for k in range(len(names))], vals, width, label=f"p{q}")
        for bar, v in zip(bars, vals, strict=True):
            ax1.text(
                bar.get_x() + bar.get_width() / 2, v * 1.08, f"{v:.1f}", ha="center", fontsize=6
            )
    ax1.set_yscale("log")
    ax1.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _p: f"{v:g}"))
    ax1.set_xticks(range(len(names)), [_label(n) for n in names], fontsize=7)
    ax1.set_ylabel("added latency over direct, ms (log)")
    ax1.set_title("Overhead at concurrency 1 (non-streaming)", fontsize=10)
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3, axis="y")
    every = result["order"]
    for i, c in enumerate(CONCURRENCY):
        vals = [result["targets"][n]["wrk"][c]["rps"] for n in every]
        ax2.bar([k + (i - 1) * width for k in range(len(every))], vals, width, label=f"c={c}")
    ax2.set_yscale("log")
    ax2.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _p: f"{v:,.0f}"))
    ax2.set_xticks(range(len(every)), [_label(n) for n in every], fontsize=7)
    ax2.set_ylabel("requests/s (log)")
    ax2.set_title("Throughput by concurrency", fontsize=10)
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3, axis="y")
    fig.text(
        0.01,
        0.01,
        f"{result['date']} · {result['commit']} · {result['machine'][:70]}",
        fontsize=6,
        color="grey",
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def draw(which: tuple[str, ...] = ("overhead", "store")) -> list[Path]:
    DOCS.mkdir(exist_ok=True)
    out = []
    try:
        _plt()
    except ImportError:
        print("chart: matplotlib missing (pip install -e '.[bench]'); no chart drawn")
        return out
    if "overhead" in which and (r := load_result("overhead")):
        out.append(overhead_chart(r, DOCS / "bench-overhead.png"))
    if "store" in which and (r := load_result("store")):
        out.append(store_chart(r, DOCS / "bench-store-latency.png"))
    return out


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m bench chart", description=__doc__).parse_args(argv)
    for path in draw():
        print(f"wrote {path}")
    return 0
