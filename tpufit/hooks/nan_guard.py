"""`NanGuardHook`: stop training at the first non-finite loss, naming its exact step."""

from __future__ import annotations

import math

from tpufit.config import Mode
from tpufit.device.outfeed import NonFiniteStep
from tpufit.errors import NonFiniteLossError
from tpufit.hooks.base import Hook, RunContext, RunValues


class NanGuardHook(Hook):
    """Stops training at the first step whose loss (or gradients) is not finite.

    A `fit` with this hook runs a guarded training program (every `fit` gets
    one unless `RunConfig(nan_guard=False)` or a `keras.callbacks.TerminateOnNaN`
    among its callbacks): the device loop ends at that step. A model on
    Keras's own `train_step` applied nothing at that step: its weights,
    optimizer state and `optimizer.iterations` are those from before it, and
    the global step counts only the steps before it. A model's own
    `train_step` applied its update before its loss could be seen: its
    weights hold the result of that step. Either way no later step ran.

    Args:
        fail: Raise `tpufit.NonFiniteLossError` (the default), carrying the
            step and loss, or only stop the run (it ends as if a hook asked).

    Attributes:
        bad_step: The global step of the first non-finite loss, or `None`.
    """

    def __init__(self, fail: bool = True) -> None:
        self.fail = fail
        self.bad_step: int | None = None

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102 - see Hook.
        bad = values.non_finite
        if ctx.mode != Mode.TRAIN or self.bad_step is not None or bad is None:
            return
        self.bad_step = ctx.global_step + bad.index + 1
        ctx.request_stop()
        if self.fail:
            raise _error(ctx, bad, float(values.outfeed["loss"][bad.index]), self.bad_step)


def _error(ctx: RunContext, bad: NonFiniteStep, loss: float, step: int) -> NonFiniteLossError:
    what = f"the loss became {loss}"
    if math.isfinite(loss):
        what = f"the gradients became NaN or infinite (the loss was {loss})"
    if bad.withheld:
        state = (
            "That step was not applied: the weights, the optimizer state and "
            f"optimizer.iterations are those after global step {step - 1}."
        )
    else:
        state = (
            "The model's own train_step applied that step before its loss was seen: its "
            f"weights hold the result of global step {step} and may be NaN (no later step "
            "ran; a model_dir keeps its last good checkpoint)."
        )
    return NonFiniteLossError(
        f"Training stopped at global step {step} (step {bad.index + 1} of the loop that "
        f"started after global step {ctx.global_step}): {what}. {state} Lower the learning "
        "rate, clip gradients (`clipnorm=` on the optimizer) or check the data for NaN/Inf; "
        "RunConfig(nan_guard=False) trains on as Keras does. "
        f"Received: loss={loss} at step={step}",
        step=step,
        loss=loss,
    )
