"""`RunConfig`: the settings of a `TPUModel`, validated once when made."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np

from tpufit import errors, validation

JIT_CHOICES = ("auto", True, False)
AUTO = "auto"
# A duration: a positive decimal number and a unit, e.g. "2s", "0.5s", "500ms", "1m".
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_LOOP_EXPECTED = (
    '"auto" (loops sized from the measured step time), a positive int (the '
    'steps each device loop runs, e.g. 100) or a duration such as "2s" or '
    '"0.5s" (loops of about that long)'
)


def parse_iterations_per_loop(value: Any) -> tuple[str, float]:
    """Reads an `iterations_per_loop` setting as `(kind, amount)`.

    Args:
        value: `"auto"`, a positive int, or a duration string: a positive
            number followed by `ms`, `s`, `m` or `h` (`"2s"`, `"0.5s"`).

    Returns:
        `("auto", 0.0)`, `("steps", n)` or `("seconds", s)`.

    Raises:
        InvalidArgumentError: Anything else, naming what would work.

    Example:
        >>> parse_iterations_per_loop("500ms")
        ('seconds', 0.5)
    """
    if isinstance(value, str):
        if value == AUTO:
            return AUTO, 0.0
        match = _DURATION.match(value)
        if match and float(match.group(1)) > 0:
            return "seconds", float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    elif validation.is_int(value) and value >= 1:
        return "steps", float(value)
    raise errors.invalid_argument("iterations_per_loop", value, _LOOP_EXPECTED)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How a `TPUModel` runs its device programs.

    Args:
        iterations_per_loop: How many steps each device program (loop) runs
            before returning to the host. A positive int fixes it. `"auto"`
            (the default) measures the step time in the first loops (1 step,
            then at most 4x longer each loop) and then sizes loops to take
            about 100x the measured per-loop overhead, kept between 0.2 s and
            2 s, so overhead stays under 1% of a loop while callbacks and the
            progress bar still run every couple of seconds at most. A duration
            such as `"2s"` or `"0.5s"` (TPUEstimator's time form; `ms`, `s`,
            `m`, `h`) sizes loops the same way to take about that long. A
            loop never runs more steps than remain: the last loop of an epoch,
            a step budget or the data shrinks so that exactly the requested
            steps run. See docs/performance.md.
        model_dir: Directory for the run's files (checkpoints), or `None`.
        jit_compile: `"auto"` compiles the step with XLA where the model and
            strategy allow it and the first loops measure it faster than the
            plain step, and falls back (with one warning) where XLA cannot
            compile it; `True` requires XLA; `False` never uses it.
        seed: Seed of the per-epoch shuffle of array inputs; `None` draws one
            from Keras's global seed state.

    Example:
        >>> config = RunConfig(iterations_per_loop=50)
        >>> config.iterations_per_loop
        50
    """

    iterations_per_loop: int | str = AUTO
    model_dir: str | os.PathLike | None = None
    jit_compile: bool | str = "auto"
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("iterations_per_loop", "seed"):
            value = getattr(self, name)
            if isinstance(value, np.integer):
                object.__setattr__(self, name, int(value))
        parse_iterations_per_loop(self.iterations_per_loop)
        if self.model_dir is not None and not isinstance(self.model_dir, (str, os.PathLike)):
            raise errors.invalid_type(
                "model_dir", self.model_dir, "a path (str or os.PathLike) or None"
            )
        if (
            self.jit_compile not in JIT_CHOICES
            or self.jit_compile in (0, 1)
            and (not isinstance(self.jit_compile, bool))
        ):
            raise errors.invalid_argument("jit_compile", self.jit_compile, '"auto", True or False')
        if self.seed is not None and not validation.is_int(self.seed):
            raise errors.invalid_type("seed", self.seed, "an int or None")

    @classmethod
    def with_overrides(
        cls, config: RunConfig | None, *, iterations_per_loop: int | str, model_dir: Any
    ) -> RunConfig:
        """Returns `config` (or the default) with `TPUModel`'s own arguments applied.

        `iterations_per_loop` overrides the config's value unless it is the
        default `"auto"`; `model_dir` unless it is `None`.
        """
        if config is None:
            return cls(iterations_per_loop=iterations_per_loop, model_dir=model_dir)
        if not isinstance(config, RunConfig):
            raise errors.invalid_type("config", config, "a tpufit.RunConfig or None")
        changes: dict[str, Any] = {}
        if not (isinstance(iterations_per_loop, str) and iterations_per_loop == AUTO):
            changes["iterations_per_loop"] = iterations_per_loop
        if model_dir is not None:
            changes["model_dir"] = model_dir
        return config.replace(**changes)

    def replace(self, **changes: Any) -> RunConfig:
        """Returns a copy with `changes` applied and validated."""
        return dataclasses.replace(self, **changes)
