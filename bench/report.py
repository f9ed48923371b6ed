"""A case's measurements, its ratios against Keras and the limit, and the suite's table.

Every figure is a cost, lower is better (ms per step, seconds per call, MB).
A ratio is the other contender's cost divided by tpufit's: above 1 means
tpufit is cheaper. A target says the ratio against a group of contenders
must reach a value:

- "keras spe=1": the best Keras run at ``steps_per_execution=1``;
- "keras best": the best Keras run of any setting;
- "limit": the best hand-written limit (or, for memory, the budget).
"""

from __future__ import annotations

import dataclasses
import json

GROUPS = {
    "keras spe=1": lambda name: name.startswith("keras spe=1 ") or name == "keras spe=1",
    "keras best": lambda name: name.startswith("keras"),
    "limit": lambda name: name.startswith("limit"),
}


@dataclasses.dataclass
class CaseResult:
    """One case: each contender's median cost and what tpufit should reach.

    Attributes:
        name: The case, e.g. "train-small".
        description: Model, data and sizes, one line.
        unit: What the costs measure, e.g. "ms/step".
        costs: Median cost per contender.
        tpufit: The contender that is tpufit.
        targets: ``(group, least ratio)`` pairs, the group one of `GROUPS`.
        notes: Lines printed under the table (e.g. tpufit's run summary).
        cpu: Median process CPU time per contender, in the same unit (all
            threads; steadier than wall time on a shared machine).
    """

    name: str
    description: str
    unit: str
    costs: dict[str, float]
    tpufit: str
    targets: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)

    def best(self, group: str) -> tuple[str, float] | None:
        """The cheapest contender of ``group`` and its cost, or None."""
        members = [(n, c) for n, c in self.costs.items() if GROUPS[group](n)]
        return min(members, key=lambda item: item[1]) if members else None

    def ratio(self, group: str) -> float | None:
        """The group's best cost over tpufit's (above 1: tpufit cheaper)."""
        best, own = self.best(group), self.costs[self.tpufit]
        if best is None:
            return None
        return best[1] / own if own > 0 else float("inf")  # no growth at all (memory)

    def verdicts(self) -> list[tuple[str, float, float, bool]]:
        """``(group, ratio, target, met)`` for each target."""
        rows = []
        for group, target in self.targets:
            ratio = self.ratio(group)
            if ratio is not None:
                rows.append((group, ratio, target, ratio >= target))
        return rows

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CaseResult:
        fields = json.loads(text)
        fields["targets"] = [tuple(t) for t in fields["targets"]]
        return cls(**fields)


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    digits = 1 if unit == "MB" else (3 if value < 10 else 1)
    return f"{value:.{digits}f}"


def table(results: list[CaseResult]) -> str:
    """The suite's table: costs, ratios against Keras and the limit, targets."""
    header = (
        f"{'case':<20}{'unit':<8}{'tpufit':>9}{'Keras spe=1':>13}{'Keras best':>12}"
        f"{'limit':>9}{'x spe=1':>9}{'x best':>8}{'x limit':>9}  targets"
    )
    lines = [header, "-" * (len(header) + 20)]
    for r in results:
        spe1, best, limit = (r.best(g) for g in ("keras spe=1", "keras best", "limit"))
        ratios = [r.ratio(g) for g in ("keras spe=1", "keras best", "limit")]
        met = "; ".join(
            f"{group} >= {target:g}: {'met' if ok else 'MISSED'}"
            for group, _, target, ok in r.verdicts()
        )
        lines.append(
            f"{r.name:<20}{r.unit:<8}{_cell(r.costs[r.tpufit], r.unit):>9}"
            f"{_cell(spe1 and spe1[1], r.unit):>13}{_cell(best and best[1], r.unit):>12}"
            f"{_cell(limit and limit[1], r.unit):>9}"
            + "".join(
                f"{(f'{x:.2f}x' if x else '-'):>{w}}"
                for x, w in zip(ratios, (9, 8, 9), strict=True)
            )
            + f"  {met}"
        )
    lines.append("")
    lines.append("Ratios: the other's cost / tpufit's (above 1: tpufit faster or smaller).")
    for r in results:
        lines.append(f"{r.name}: {r.description}")
        best, limit = r.best("keras best"), r.best("limit")
        if best:
            lines.append(f"  Keras best: {best[0]}")
        if limit:
            lines.append(f"  limit: {limit[0]}")
        if r.cpu:
            shown = [(r.tpufit, "tpufit")] + [
                (b[0], g) for b, g in ((best, "Keras best"), (limit, "limit")) if b
            ]
            lines.append(
                f"  CPU {r.unit} (all threads): "
                + ", ".join(f"{label} {_cell(r.cpu[name], r.unit)}" for name, label in shown)
            )
        lines.extend(f"  {note}" for note in r.notes)
    return "\n".join(lines)
