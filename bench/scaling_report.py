"""A scaling measurement (costs against one varied size), its tables and its plot.

A `Scaling` holds, for each contender (a series), its median cost at each
value of what varies (rows, loop length, hooks, replicas). It prints as a
text table, writes as a Markdown table for docs/performance.md, and draws a
small PNG. With ``fit_line`` the table also gives each series' least-squares
line, ``cost = fixed + per_unit * x``, weighted by 1/cost (relative errors),
so the small sizes decide the fixed cost and the large ones the slope.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

PNG_DPI = 80


@dataclasses.dataclass
class Scaling:
    """Costs of several contenders against one varied quantity.

    Attributes:
        name: Short name, also the PNG's (``scaling-<name>.png``).
        title: One line: what is measured, on what.
        x_label: What varies, e.g. "rows".
        x: Its values.
        unit: The costs' unit, e.g. "s/call".
        series: Median cost per contender, one per value of ``x`` (None: not run).
        notes: Lines printed under the table.
        log_x: Plot ``x`` on a log scale (and ``log_y`` the costs).
        log_y: See ``log_x``.
        marks: ``(x, label)`` vertical lines on the plot, e.g. where a rule switches.
        fit_line: Add each series' fitted fixed cost and cost per unit of ``x``.
        per_unit: The slope's unit in the fit table, e.g. "µs/row".
        per_unit_scale: The slope (in ``unit`` per x) times this is in ``per_unit``.
    """

    name: str
    title: str
    x_label: str
    x: list[float]
    unit: str
    series: dict[str, list[float | None]]
    notes: list[str] = dataclasses.field(default_factory=list)
    log_x: bool = False
    log_y: bool = False
    marks: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    fit_line: bool = False
    per_unit: str = ""
    per_unit_scale: float = 1.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Scaling:
        fields = json.loads(text)
        fields["marks"] = [tuple(m) for m in fields["marks"]]
        return cls(**fields)

    def fits(self) -> dict[str, tuple[float, float]]:
        """Each series' ``(fixed cost, cost per unit of x)``, from its measured points."""
        import numpy as np

        lines = {}
        for name, costs in self.series.items():
            points = [(x, c) for x, c in zip(self.x, costs, strict=True) if c is not None]
            if len(points) < 2:
                continue
            xs, cs = (np.array(v, dtype=float) for v in zip(*points, strict=True))
            slope, intercept = np.polyfit(xs, cs, 1, w=1 / cs)
            lines[name] = (float(intercept), float(slope) * self.per_unit_scale)
        return lines


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.3f}"


def _rows(scaling: Scaling) -> tuple[list[str], list[list[str]]]:
    header = [scaling.x_label, *scaling.series]
    rows = [
        [f"{x:,}", *(_cell(costs[i]) for costs in scaling.series.values())]
        for i, x in enumerate(scaling.x)
    ]
    return header, rows


def _fit_rows(scaling: Scaling) -> tuple[list[str], list[list[str]]]:
    header = ["fitted line", f"fixed ({scaling.unit.split('/')[0]})", scaling.per_unit]
    rows = [[name, _cell(a), _cell(b)] for name, (a, b) in scaling.fits().items()]
    return header, rows


def _text(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return lines


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _blocks(scaling: Scaling, render) -> list[str]:
    lines = render(*_rows(scaling))
    if scaling.fit_line:
        lines += ["", *render(*_fit_rows(scaling))]
    return lines


def text_table(scaling: Scaling) -> str:
    """The scaling as a plain-text table, its fitted lines and notes."""
    lines = [f"{scaling.title} ({scaling.unit})", *_blocks(scaling, _text)]
    return "\n".join(lines + [f"  {note}" for note in scaling.notes])


def markdown(scaling: Scaling, image: str | None = None) -> str:
    """The scaling as Markdown: title, tables, notes, and the plot when given."""
    lines = [f"**{scaling.title}** ({scaling.unit})", "", *_blocks(scaling, _markdown), ""]
    lines += [f"- {note}" for note in scaling.notes]
    if image:
        lines += ["", f"![{scaling.title}]({image})"]
    return "\n".join(lines)


def plot(scaling: Scaling, path: Path) -> None:
    """Draws the series against ``x`` into a small PNG at ``path`` (fitted lines dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.6, 3.4), dpi=PNG_DPI)
    fits = scaling.fits() if scaling.fit_line else {}
    for name, costs in scaling.series.items():
        points = [(x, c) for x, c in zip(scaling.x, costs, strict=True) if c is not None]
        if points:
            (line,) = axes.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name)
        if name in fits:
            fixed, slope = fits[name]
            xs = [points[0][0] * (points[-1][0] / points[0][0]) ** (i / 40) for i in range(41)]
            ys = [fixed + slope / scaling.per_unit_scale * x for x in xs]
            axes.plot(xs, ys, linestyle=":", linewidth=1, color=line.get_color())
    for x, label in scaling.marks:
        axes.axvline(x, color="grey", linestyle="--", linewidth=1)
        axes.annotate(label, (x, 0.97), xycoords=("data", "axes fraction"), fontsize=7,
                      ha="right", va="top", rotation=90, color="dimgrey",
                      bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})  # fmt: skip
    axes.set_xscale("log" if scaling.log_x else "linear")
    axes.set_yscale("log" if scaling.log_y else "linear")
    if not scaling.log_x:
        axes.set_xticks(scaling.x)
    axes.set_xlabel(scaling.x_label)
    axes.set_ylabel(scaling.unit)
    axes.set_title(textwrap.fill(scaling.title, 80), fontsize=8)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=PNG_DPI)
    plt.close(figure)


def write(results: list[Scaling], folder: Path, header: str) -> Path:
    """Writes each result's PNG and one ``scaling.md`` with all the tables into ``folder``.

    ``header`` opens ``scaling.md``: how and where the figures were measured.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sections = [header]
    for scaling in results:
        image = f"scaling-{scaling.name}.png"
        plot(scaling, folder / image)
        sections.append(markdown(scaling, image))
    path = folder / "scaling.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path
