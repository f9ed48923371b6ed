"""`Progress`: where training is — the one object the fit loop advances and checkpoints save.

It holds the global step, the epoch, the step within that epoch and the
shuffle seed, as variables (a checkpoint saves and restores them with the
weights) mirrored on the host (read from the device once per run, then
counted). The training program adds each loop's steps to the global step and
to the step in the epoch on the device, in the same call that runs them, so
the position always matches the weights, even when the host is interrupted
right after a loop; the host rolls the epoch over when it completes.

`resume_point` says where a `fit` starts from a position: the only place a
resumed run's first epoch, first step and skipped batches are worked out.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import tensorflow as tf

from tpufit import errors
from tpufit.model_dir.checkpoint import STATE_FIELDS
from tpufit.run.passes import Passes, epochs_until


class Progress(tf.Module):
    """Where training is: global step, epoch, step in the epoch, shuffle seed.

    Attributes:
        global_step: Steps trained so far (an int64 variable).
        epoch: The epoch the next step belongs to.
        step_in_epoch: Steps of `epoch` already trained.
        data_seed: The shuffle seed of the runs that trained, or -1.
    """

    def __init__(self) -> None:
        super().__init__(name="tpufit_state")
        with tf.init_scope():
            for name in STATE_FIELDS:
                initial = -1 if name == "data_seed" else 0
                setattr(
                    self, name, tf.Variable(initial, dtype=tf.int64, trainable=False, name=name)
                )
        self._host: dict[str, int] | None = None

    @property
    def counters(self) -> list[tf.Variable]:
        """The variables a training program adds its steps to, on the device."""
        return [self.global_step, self.step_in_epoch]

    def values(self) -> dict[str, int]:
        """Every field as a Python int: the host's count during a run, else read from the device."""
        if self._host is not None:
            return dict(self._host)
        return {name: int(getattr(self, name).numpy()) for name in STATE_FIELDS}

    def assign(self, values: dict[str, int]) -> None:
        """Sets fields (a restored checkpoint's, a fit's seed); the host's count follows."""
        for name, value in values.items():
            getattr(self, name).assign(value)
        if self._host is not None:
            self._host.update(values)

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """A block (a training run) in which the host counts: the device is read once, first."""
        self._host = {name: int(getattr(self, name).numpy()) for name in STATE_FIELDS}
        try:
            yield
        finally:
            self._host = None

    def start_epoch(self, epoch: int, first_step: int) -> None:
        """Records that `epoch` runs from its step `first_step` (a resumed epoch starts later)."""
        if (self.values()["epoch"], self.values()["step_in_epoch"]) != (epoch, first_step):
            self.assign({"epoch": epoch, "step_in_epoch": first_step})

    def training_loop_ran(self, steps: int, epoch_steps: int | None) -> None:
        """Counts a training loop's steps (the device counted them too); rolls the epoch over.

        Args:
            steps: The loop's steps.
            epoch_steps: The current epoch's steps, `None` until its data runs out.
        """
        assert self._host is not None, "only inside counting()"
        self._host["global_step"] += steps
        self._host["step_in_epoch"] += steps
        if epoch_steps is not None and self._host["step_in_epoch"] >= epoch_steps:
            self.end_epoch(self._host["epoch"])

    def end_epoch(self, epoch: int) -> None:
        """Rolls over to the epoch after `epoch`, if not done yet."""
        if self.values()["epoch"] == epoch:
            self.assign({"epoch": epoch + 1, "step_in_epoch": 0})

    def shuffle_seed(self, draw: Callable[[], int], *, keep: bool) -> int:
        """Returns the shuffle seed of a `fit` without `RunConfig.seed`.

        With `keep` (a `model_dir`), the first seed drawn is kept in the
        checkpoints, so a resumed run shuffles as the interrupted one did;
        otherwise every `fit` draws anew.
        """
        if not keep:
            return draw()
        stored = self.values()["data_seed"]
        if stored < 0:
            stored = draw()
            self.assign({"data_seed": stored})
        return stored


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a `fit` starts, what its infeed skips to get there, and where it ends.

    Attributes:
        epoch: The epoch of its first step.
        step: Index, within that epoch, of its first step.
        pass_step: The step of the current pass its first epoch started at.
        skip_batches: Batches of the infeed already trained (by a `fit` from
            `initial_epoch` up to `epoch` and `step`), skipped before the first step.
        skip_tail_batches: Partial-last-batch steps among them (their own stream).
        epochs: The epoch it stops before (with `max_steps`: the epoch in
            which the global step reaches it, plus one).
    """

    epoch: int
    step: int
    pass_step: int
    skip_batches: int
    skip_tail_batches: int
    epochs: int


def resume_point(
    position: dict[str, int],
    *,
    continues: bool,
    initial_epoch: int,
    epochs: int,
    passes: Passes,
    max_steps: int | None,
    model_dir: str | None = None,
) -> ResumePoint:
    """Returns where a `fit` from `initial_epoch` starts.

    When it `continues` (with a `model_dir`: from a restored checkpoint, or
    this model's earlier `fit`), training continues at `position`, unless
    `initial_epoch` is later; the infeed then skips what a `fit` from
    `initial_epoch` would have read by then, its epochs walking the passes as
    `passes` says. Otherwise it starts at `initial_epoch`, on a new pass.
    Warns when the position is already past `epochs` (without `max_steps`,
    which sets the epochs itself).

    Args:
        position: `Progress.values()`.
        continues: Whether training continues at `position` (a `model_dir`).
        initial_epoch: `fit`'s `initial_epoch`.
        epochs: `fit`'s `epochs`.
        passes: The data's passes and `steps_per_epoch`.
        max_steps: `fit`'s `max_steps`, or `None`.
        model_dir: Named in the warning.

    Example:
        >>> resume_point({"epoch": 1, "step_in_epoch": 3, "global_step": 10},
        ...              continues=True, initial_epoch=0, epochs=3,
        ...              passes=Passes(10, tail=False, steps_per_epoch=7), max_steps=None)
        ResumePoint(epoch=1, step=3, pass_step=7, skip_batches=10, skip_tail_batches=0, epochs=3)
    """
    epoch, step = initial_epoch, 0
    if continues:
        epoch, step = position["epoch"], position["step_in_epoch"]
        if epoch >= initial_epoch:
            length = passes.span(passes.epoch_start(epoch - initial_epoch)[1]).steps
            if length is not None and step >= length:
                epoch, step = epoch + 1, 0
        if (epoch, step) <= (initial_epoch, 0):
            epoch, step = initial_epoch, 0
        if max_steps is None and epoch >= epochs:
            errors.warn(
                f"tpufit: model_dir {model_dir} is already at epoch {epoch} (global step "
                f"{position['global_step']}), so fit(epochs={epochs}) trains no further. "
                "Epochs count across the runs of a model_dir: raise `epochs` to train more."
            )
    run_epoch = epoch - initial_epoch
    if max_steps is not None:
        global_step = position["global_step"]
        epochs = initial_epoch + epochs_until(passes, max_steps, global_step, run_epoch, step)
    skip, skip_tail = passes.batches_before(run_epoch, step)
    pass_step = passes.epoch_start(run_epoch)[1]
    return ResumePoint(epoch, step, pass_step, skip, skip_tail, epochs)
