"""Warm start: initialise a model's weights from another run's checkpoint."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from tpufit import errors
from tpufit.config import WarmStartSettings
from tpufit.model_dir import checkpoint


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
