"""The words every stage shares: `RunConfig`, the modes of a run, the batch layouts.

`RunConfig` holds a `TPUModel`'s settings, validated once when made;
`WarmStartSettings` is one of them. `Mode` and `Layout` are the two decisions
a run carries from the front door to the device: which of `fit` / `evaluate`
/ `predict` runs, and how its partial last batch is laid out.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from typing import Any

import numpy as np

from tpufit import errors
from tpufit.errors import is_int

JIT_CHOICES = ("auto", True, False)
PARTIAL_BATCH_CHOICES = ("auto", "pad", "true_size")
INFEED_CHOICES = ("auto", "resident", "stream")
AUTO = "auto"
# A duration: a positive decimal number and a unit, e.g. "2s", "0.5s", "500ms", "1m".
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_LOOP_EXPECTED = (
    '"auto" (loops sized from the measured step time), a positive int (the '
    'steps each device loop runs, e.g. 100) or a duration such as "2s" or '
    '"0.5s" (loops of about that long)'
)


class Mode(enum.StrEnum):
    """What a run does. A `str`, so `ctx.mode == "train"` keeps working in hooks."""

    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "predict"


class Layout(enum.Enum):
    """How a run's batches reach the step: decided once per run, carried by its infeed.

    `PADDED`: every batch has the static size; the partial last batch is
    padded with copies of its rows and a mask says which rows are real
    (tpufit's masked copies of Keras's steps where padding rows are provably
    invisible, and every `predict`).
    `TRUE_SIZE`: full batches have the static size; the partial last batch
    runs at its true size in a second trace of the step, with no padding at
    all (a model's own `train_step` / `test_step`, which cannot be masked, and
    Keras's own steps wherever padding rows could change a result).
    `tpufit/device/layout.py` chooses.
    """

    PADDED = "padded"
    TRUE_SIZE = "true_size"


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
    elif is_int(value) and value >= 1:
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
            strategy allow it, except a step with convolutions on a machine
            without accelerators (XLA's CPU convolutions are slower), and
            falls back (with one warning) where XLA cannot compile it; a fixed
            rule, never timings, so results are reproducible. `True` requires
            XLA; `False` never uses it.
        seed: Seed of the per-epoch shuffle of array inputs; `None` draws one
            from Keras's global seed state.
        save_checkpoints_steps: With a `model_dir`, write a checkpoint at the
            first loop boundary at least this many steps after the last one;
            `None` for no step cadence.
        save_checkpoints_secs: With a `model_dir`, write a checkpoint at the
            first loop boundary at least this many seconds after the last one
            (600, as TPUEstimator); `None` for no time cadence. Whichever of
            the two cadences comes first triggers; every `fit` also writes one
            at its end.
        keep_checkpoint_max: Checkpoints kept in `model_dir` (the newest);
            `None` or 0 keeps all.
        keep_checkpoint_every_n_hours: Also keep, for good, one checkpoint
            per this many hours of training; `None` keeps none beyond
            `keep_checkpoint_max`.
        warm_start_from: Initialise the model's weights, before its first run,
            from another run's checkpoint: a checkpoint path, a `model_dir`
            (its latest checkpoint), or a `tpufit.WarmStartSettings` to take
            only the weights matching a regex (`(path, regex)` is short for
            it). Ignored when `model_dir`
            already holds a checkpoint (the run resumes instead); never takes
            the other run's global step or optimizer state.
        partial_batch: How `fit` and `evaluate` run a partial last batch of a
            model on Keras's own `train_step` / `test_step`. `"auto"` (the
            default) pads it to the static shape, masked, only where padding
            rows provably cannot change a result (every layer row-wise, Keras
            built-in losses and metrics on one value per row), and otherwise
            runs it at its true size through Keras's own step (one more
            trace); `"pad"` always pads (one compiled shape, e.g. on a TPU,
            accepting the differences docs/exactness.md lists); `"true_size"`
            never pads. A model with its own step always runs at true size;
            `predict` always pads. `TPUModel.layouts` says what was chosen.
        nan_guard: Stop `fit` at the first step whose loss (or gradients) is
            NaN or infinite, raising `tpufit.NonFiniteLossError` with its
            exact global step (`.step`) and loss (`.loss`); the default, with
            or without a `model_dir` (TPUEstimator's `NanTensorHook`). The
            device loop ends at that step, and a model on Keras's own
            `train_step` does not apply it: its weights, optimizer state,
            `optimizer.iterations` and `TPUModel.global_step` are those after
            the last good step. A model with its own `train_step` has applied
            the step: its weights hold that step's result (the error says so).
            `False` trains on as Keras does (NaN weights); a
            `keras.callbacks.TerminateOnNaN` among `fit`'s callbacks also
            turns the guard off for that `fit`, for Keras's meaning (the run
            stops at the end of the loop, without an error). See docs/hooks.md.
        cluster_connect_timeout_secs: How long `tpufit.cluster.multi_worker_strategy`
            waits for every other worker of `TF_CONFIG`'s cluster to come up
            before raising `tpufit.errors.ClusterConnectError` naming the
            missing ones (default 300). See docs/scale-out.md.
        save_summary_steps: With a `model_dir`, write TensorBoard summaries
            (TPUEstimator's): every training step's loss at its global step,
            and at the first loop boundary at least this many steps after the
            last write the running metrics (`batch_<name>`), `global_step/sec`
            and `examples/sec`, to `<model_dir>/train`; each epoch's logs as
            `epoch_<name>`; every `evaluate` and `fit` validation to
            `<model_dir>/eval` at the global step evaluated. Only the chief
            writes. `None` writes none. See docs/model_dir.md.
        log_step_count_steps: In `fit`, log `loss = …, step = …,
            global_step/sec = …` at INFO level to the `tpufit` logger
            (`logging.getLogger("tpufit")`, not stdout) at the first loop
            boundary at least this many steps after the last line; `None`
            logs nothing.
        infeed: How array inputs (numpy, pandas) reach the loop. `"stream"`
            streams their batches through `tf.data`; `"resident"` copies the
            arrays to the device once (reused while unchanged) and gathers
            each step's batch inside the loop, with the same batches in the
            same order; `"auto"` (the default) is resident for arrays up to
            1 GiB on an accelerator; on a CPU, up to an eighth of the free
            RAM for `fit` and 64 MiB for `evaluate` / `predict` (one pass).
            Other inputs always stream. See docs/inputs.md.

    Example:
        >>> config = RunConfig(iterations_per_loop=50)
        >>> config.iterations_per_loop
        50
    """

    iterations_per_loop: int | str = AUTO
    model_dir: str | os.PathLike | None = None
    jit_compile: bool | str = "auto"
    seed: int | None = None
    save_checkpoints_steps: int | None = None
    save_checkpoints_secs: float | None = 600
    keep_checkpoint_max: int | None = 5
    keep_checkpoint_every_n_hours: float | None = None
    warm_start_from: str | os.PathLike | WarmStartSettings | tuple | None = None
    partial_batch: str = "auto"
    nan_guard: bool = True
    cluster_connect_timeout_secs: float = 300
    save_summary_steps: int | None = 100
    log_step_count_steps: int | None = 100
    infeed: str = "auto"

    def __post_init__(self) -> None:
        for name in (
            "iterations_per_loop",
            "seed",
            "save_checkpoints_steps",
            "keep_checkpoint_max",
            "save_summary_steps",
            "log_step_count_steps",
        ):
            value = getattr(self, name)
            if isinstance(value, np.integer):
                object.__setattr__(self, name, int(value))
        for name in ("save_checkpoints_secs", "keep_checkpoint_every_n_hours"):
            value = getattr(self, name)
            if isinstance(value, (np.integer, np.floating)):
                object.__setattr__(self, name, float(value))
        if isinstance(self.nan_guard, np.bool_):
            object.__setattr__(self, "nan_guard", bool(self.nan_guard))
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
        if self.seed is not None and not is_int(self.seed):
            raise errors.invalid_type("seed", self.seed, "an int or None")
        if self.partial_batch not in PARTIAL_BATCH_CHOICES:
            raise errors.invalid_argument(
                "partial_batch", self.partial_batch, '"auto", "pad" or "true_size"'
            )
        if not isinstance(self.nan_guard, bool):
            raise errors.invalid_type("nan_guard", self.nan_guard, "True or False")
        timeout = self.cluster_connect_timeout_secs
        if not _is_number(timeout) or not timeout > 0:
            raise errors.invalid_argument(
                "cluster_connect_timeout_secs", timeout, "a positive number of seconds, e.g. 300"
            )
        errors.check_positive_int("save_summary_steps", self.save_summary_steps, allow_none=True)
        errors.check_positive_int(
            "log_step_count_steps", self.log_step_count_steps, allow_none=True
        )
        if not isinstance(self.infeed, str) or self.infeed not in INFEED_CHOICES:
            raise errors.invalid_argument("infeed", self.infeed, '"auto", "resident" or "stream"')
        self._check_checkpointing()

    def _check_checkpointing(self) -> None:
        steps = self.save_checkpoints_steps
        if steps is not None and (not is_int(steps) or steps < 1):
            raise errors.invalid_argument(
                "save_checkpoints_steps",
                steps,
                "a positive int (steps between checkpoints) or None",
            )
        for name in ("save_checkpoints_secs", "keep_checkpoint_every_n_hours"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or value < 0):
                raise errors.invalid_argument(name, value, "a non-negative number or None")
        keep = self.keep_checkpoint_max
        if keep is not None and (not is_int(keep) or keep < 0):
            raise errors.invalid_argument(
                "keep_checkpoint_max", keep, "a non-negative int (0 or None keeps all) or None"
            )
        start = self.warm_start_from
        if isinstance(start, tuple) and len(start) == 2:
            start = WarmStartSettings(*start)
            object.__setattr__(self, "warm_start_from", start)
        if start is not None and not isinstance(start, (str, os.PathLike, WarmStartSettings)):
            raise errors.invalid_type(
                "warm_start_from",
                start,
                "a checkpoint path or directory (str or os.PathLike), a "
                "tpufit.WarmStartSettings, a (path, regex) tuple, or None",
            )

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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
