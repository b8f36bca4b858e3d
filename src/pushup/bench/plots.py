"""Line plots of the paper's figures, ours solid and the paper's dashed, as PNG files.

matplotlib runs on its Agg backend: no display is needed, and nothing is imported
until a plot is drawn, so running a benchmark with `--no-plots` never needs it.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# One colour per method or server, the same in every figure.
COLORS = {
    "CP": "tab:orange",
    "MLP": "tab:red",
    "ELP": "tab:blue",
    "pushup": "tab:blue",
    "mlp": "tab:red",
    "Nchan": "tab:green",
    "nchan": "tab:green",
}


@dataclass
class Series:
    """One line: y values may be None where nothing was measured (the point is left out)."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color_key: str = ""
    paper: bool = False  # the paper's own numbers: dashed, hollow markers


def line_figure(
    path: pathlib.Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Sequence[Series],
    *,
    logx: bool = False,
    logy: bool = False,
    xticks: Sequence[float] | None = None,
    ylim: tuple[float | None, float | None] | None = None,
    secondary_y: tuple[str, float] | None = None,
    footnote: str = "",
) -> pathlib.Path:
    """Draw `series` into a PNG at `path`; the path written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=110)
    try:
        markers = "osD^v<>"
        keys: dict[str, int] = {}  # a method's lines (ours, the paper's) share a marker
        for line in series:
            key = line.color_key or line.label
            index = keys.setdefault(key, len(keys))
            points = [(x, y) for x, y in zip(line.xs, line.ys, strict=True) if y is not None]
            if not points:
                continue
            if logy:
                points = [(x, y) for x, y in points if y > 0]
            xs = [x for x, _ in points]
            ys = [y for _, y in points]
            ax.plot(
                xs,
                ys,
                linestyle="--" if line.paper else "-",
                # Different markers keep lines that coincide (e.g. RMP 100 %) visible.
                marker=markers[index % len(markers)],
                markersize=7 - (index % 3),
                markerfacecolor="none" if line.paper else None,
                color=COLORS.get(line.color_key or line.label),
                alpha=0.7 if line.paper else 1.0,
                label=line.label,
            )
        if logx:
            ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        if xticks is not None:
            ax.set_xticks(list(xticks))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(ScalarFormatter(useOffset=False))
            ax.tick_params(axis="x", which="minor", labelbottom=False)
        if ylim is not None:
            ax.set_ylim(*ylim)
        if secondary_y is not None:
            # The same axis in other units (e.g. MiB and % of memory): a constant factor.
            label, factor = secondary_y

            def forward(values: Any) -> Any:
                return values * factor

            def inverse(values: Any) -> Any:
                return values / factor

            ax.secondary_yaxis("right", functions=(forward, inverse)).set_ylabel(label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        if footnote:
            fig.text(0.01, 0.01, footnote, fontsize="x-small", color="dimgray")
        fig.tight_layout(rect=(0, 0.04 if footnote else 0, 1, 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
