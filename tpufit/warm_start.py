"""Warm start: initialise a model's weights from another run's checkpoint."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from typing import Any

from tpufit import checkpoint, errors


@dataclasses.dataclass(frozen=True)
class WarmStartSettings:
    """Which checkpoint to warm-start from, and which weights to take (TPUEstimator's names).

    Weights are taken by position in `model.weights`, as `set_weights` takes
    them: weight `i` of this model from weight `i` of the checkpoint's model,
    for every weight whose `variable.path` matches `vars_to_warm_start`
    (`re.search`). The other weights keep their initial values; the global
    step and the optimizer state are never taken.

    Args:
        ckpt_to_initialize_from: A checkpoint prefix (`runs/a/ckpt-500`) or a
            `model_dir` (its latest checkpoint).
        vars_to_warm_start: A regular expression over the weights' paths,
            e.g. `"dense"` or `"^(?!.*head)"`; `".*"` takes every weight.

    Example:
        >>> config = tpufit.RunConfig(warm_start_from=tpufit.WarmStartSettings(
        ...     "runs/pretrained", vars_to_warm_start="body"))
    """

    ckpt_to_initialize_from: str | os.PathLike
    vars_to_warm_start: str = ".*"

    def __post_init__(self) -> None:
        if not isinstance(self.ckpt_to_initialize_from, (str, os.PathLike)):
            raise errors.invalid_type(
                "ckpt_to_initialize_from",
                self.ckpt_to_initialize_from,
                "a checkpoint path or a model_dir (str or os.PathLike)",
            )
        if not isinstance(self.vars_to_warm_start, str):
            raise errors.invalid_type(
                "vars_to_warm_start", self.vars_to_warm_start, "a regular expression (str)"
            )
        try:
            re.compile(self.vars_to_warm_start)
        except re.error as error:
            raise errors.invalid_argument(
                "vars_to_warm_start",
                self.vars_to_warm_start,
                f"a valid regular expression ({error})",
            ) from error


def settings(warm_start_from: Any) -> WarmStartSettings:
    """Returns `RunConfig.warm_start_from` as `WarmStartSettings` (a path takes every weight)."""
    if isinstance(warm_start_from, WarmStartSettings):
        return warm_start_from
    return WarmStartSettings(warm_start_from)


def find_checkpoint(start: WarmStartSettings) -> str:
    """Returns the checkpoint prefix to warm-start from; a tpufit error if there is none."""
    path = os.fspath(start.ckpt_to_initialize_from)
    found = checkpoint.resolve(path)
    if found is None or checkpoint.Reader(found).count("weights") == 0:
        raise errors.invalid_argument(
            "warm_start_from",
            path,
            "a tpufit checkpoint prefix (e.g. 'runs/a/ckpt-500') or a model_dir holding one",
            what="Nothing to warm-start from",
        )
    return found


def warm_start(start: WarmStartSettings, weights: Sequence[Any]) -> list[str]:
    """Assigns the selected `weights` from the checkpoint; returns the paths it set.

    Every selected weight is checked before any is assigned.

    Raises:
        InvalidArgumentError: No checkpoint, no weight selected, or a selected
            weight whose shape differs in the checkpoint.
    """
    path = find_checkpoint(start)
    reader = checkpoint.Reader(path)
    pattern = re.compile(start.vars_to_warm_start)
    chosen = [(i, w) for i, w in enumerate(weights) if pattern.search(w.path)]
    if not chosen:
        raise errors.invalid_argument(
            "vars_to_warm_start",
            start.vars_to_warm_start,
            "a regular expression matching some of the model's weight paths: "
            + ", ".join(w.path for w in weights),
            what="No weight to warm-start",
        )
    for index, weight in chosen:
        problem = reader.mismatch_of(checkpoint.key("weights", index), weight)
        if problem:
            raise errors.invalid_argument(
                "warm_start_from",
                path,
                "a checkpoint of a model whose weights have this model's shapes "
                f"(weight {index}, {weight.path}: {problem}); narrow vars_to_warm_start "
                "with tpufit.WarmStartSettings to leave it out",
                what="The warm-start checkpoint does not fit this model",
            )
    for index, weight in chosen:
        weight.assign(reader.value(checkpoint.key("weights", index)))
    return [weight.path for _, weight in chosen]
