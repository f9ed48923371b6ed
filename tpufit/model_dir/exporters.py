"""Exporters: SavedModels of evaluated weights, kept as TPUEstimator's exporters kept them.

`tpufit.train_and_evaluate` and `tpufit.evaluate_checkpoints` hand every
evaluation to their exporters. An export is `tm.export` of the evaluated
weights, written to `<path>/<global step>` with the evaluation beside the
SavedModel's own files (`evaluation.json`: the global step and the metrics).
What is kept is decided from those files alone, so a restarted job (or a
second evaluator) knows the best evaluation so far without any other state.

An export is written under a hidden temporary name and renamed into place
once complete: a directory named after a global step is always whole.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from tpufit import cluster, errors

if TYPE_CHECKING:
    from tpufit.model import TPUModel

EVALUATION_FILE = "evaluation.json"


class Exporter:
    """Base class of exporters: called after every evaluation of a run that has them.

    Args:
        path: The directory the exports go into, one subdirectory per global step.
        keep: How many exports to keep.
    """

    def __init__(self, path: str | os.PathLike, keep: int = 5) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise errors.invalid_type("path", path, "a directory path (str or os.PathLike)")
        errors.check_positive_int("keep", keep)
        self.path = os.path.abspath(os.fspath(path))
        self.keep = int(keep)

    def export(self, tm: TPUModel, global_step: int, logs: Mapping[str, Any]) -> str | None:
        """Exports `tm`'s current weights after an evaluation, if this exporter keeps it.

        Args:
            tm: The `tpufit.TPUModel` holding the evaluated weights.
            global_step: The global step of those weights.
            logs: The evaluation's metrics.

        Returns:
            The export's directory, or `None` when nothing was exported.
        """
        raise NotImplementedError

    def exports(self) -> dict[int, dict[str, Any]]:
        """Returns the complete exports on disk: global step -> that evaluation's metrics."""
        found: dict[int, dict[str, Any]] = {}
        if not os.path.isdir(self.path):
            return found
        for name in os.listdir(self.path):
            record = os.path.join(self.path, name, EVALUATION_FILE)
            if name.isdigit() and os.path.isfile(record):
                with open(record) as file:
                    found[int(name)] = json.load(file)["metrics"]
        return found

    def _write(self, tm: TPUModel, global_step: int, logs: Mapping[str, Any]) -> str:
        target = os.path.join(self.path, str(global_step))
        temporary = os.path.join(self.path, f".{global_step}.writing")
        shutil.rmtree(temporary, ignore_errors=True)  # left by a process killed while exporting
        tm.export(temporary)
        metrics = {name: _jsonable(value) for name, value in logs.items()}
        with open(os.path.join(temporary, EVALUATION_FILE), "w") as file:
            json.dump({"global_step": int(global_step), "metrics": metrics}, file)
        shutil.rmtree(target, ignore_errors=True)  # the same step evaluated again
        os.replace(temporary, target)
        return target

    def _remove(self, steps: list[int]) -> None:
        for step in steps:
            shutil.rmtree(os.path.join(self.path, str(step)), ignore_errors=True)


class LatestExporter(Exporter):
    """Exports after every evaluation, keeping the newest `keep` exports.

    Args:
        path: The directory the exports go into, as `<path>/<global step>`.
        keep: How many of the newest exports to keep.
    """

    def export(self, tm: TPUModel, global_step: int, logs: Mapping[str, Any]) -> str | None:  # noqa: D102
        if not cluster.is_chief(tm.strategy):
            return None
        target = self._write(tm, global_step, logs)
        self._remove(sorted(self.exports(), reverse=True)[self.keep :])
        return target


class BestExporter(Exporter):
    """Exports after an evaluation that is the best so far, keeping the best `keep` exports.

    "So far" counts every export in `path`, also those of earlier processes.

    Args:
        path: The directory the exports go into, as `<path>/<global step>`.
        metric: The evaluation's metric that ranks them, e.g. `"loss"`, `"accuracy"`.
        mode: `"min"` (lower is better) or `"max"`.
        keep: How many of the best exports to keep.
    """

    def __init__(
        self, path: str | os.PathLike, metric: str = "loss", mode: str = "min", keep: int = 5
    ) -> None:
        super().__init__(path, keep)
        if not isinstance(metric, str):
            raise errors.invalid_type("metric", metric, "a metric name (str), e.g. 'loss'")
        if mode not in ("min", "max"):
            raise errors.invalid_argument("mode", mode, '"min" or "max"')
        self.metric = metric
        self.mode = mode

    def export(self, tm: TPUModel, global_step: int, logs: Mapping[str, Any]) -> str | None:  # noqa: D102
        if self.metric not in logs:
            raise errors.invalid_argument(
                "metric",
                self.metric,
                "one of the evaluation's metrics: " + ", ".join(repr(n) for n in sorted(logs)),
                what="BestExporter cannot rank the evaluation: it has no such metric",
            )
        value = float(logs[self.metric])
        if not cluster.is_chief(tm.strategy) or math.isnan(value):
            return None
        ranked = self._ranked(self.exports())
        if ranked and not self._better(value, ranked[0][1]):
            return None
        target = self._write(tm, global_step, logs)
        self._remove([step for step, _ in self._ranked(self.exports())[self.keep :]])
        return target

    def _better(self, value: float, than: float) -> bool:
        return value < than if self.mode == "min" else value > than

    def _ranked(self, exports: dict[int, dict[str, Any]]) -> list[tuple[int, float]]:
        """The exports as (step, value), best first; the newer first among equals."""
        sign = 1.0 if self.mode == "min" else -1.0
        scored = [
            (step, float(metrics[self.metric]))
            for step, metrics in exports.items()
            if isinstance(metrics.get(self.metric), (int, float))
        ]
        return sorted(scored, key=lambda item: (sign * item[1], -item[0]))


def _jsonable(value: Any) -> Any:
    array = np.asarray(value)
    return float(array) if array.ndim == 0 else array.tolist()
