"""`NanGuardHook`: stop training at the first non-finite loss, naming its step."""

from __future__ import annotations

from tpufit.config import Mode
from tpufit.errors import NonFiniteLossError
from tpufit.hooks.base import Hook, RunContext, RunValues, first_non_finite


class NanGuardHook(Hook):
    """Stops training at the first NaN or infinite loss, naming the exact global step.

    It reads every step's loss from the outfeed, so it finds the step inside
    a loop, not only the loop. The loop it is found in has already run to its
    end (the device does not return mid-loop), so the weights are those after
    the loop; `tpufit.errors.NonFiniteLossError` carries the step and loss.

    Args:
        fail: Raise `NonFiniteLossError` (the default) or only stop the run.

    Attributes:
        bad_step: The global step of the first non-finite loss, or `None`.
    """

    def __init__(self, fail: bool = True) -> None:
        self.fail = fail
        self.bad_step: int | None = None

    def after_run(self, ctx: RunContext, values: RunValues) -> None:  # noqa: D102 - see Hook.
        if ctx.mode != Mode.TRAIN or self.bad_step is not None or "loss" not in values.logs:
            return  # A model's own train step that logs no "loss" has none to check.
        losses = values.outfeed["loss"]
        index = first_non_finite(losses)
        if index is None:
            return
        self.bad_step = ctx.global_step + index + 1
        ctx.request_stop()
        if self.fail:
            loss = float(losses[index])
            raise NonFiniteLossError(
                f"Training stopped: the loss became {loss} at global step {self.bad_step} "
                f"(step {index + 1} of the loop that started after global step "
                f"{ctx.global_step}). Lower the learning rate, clip gradients "
                "(`clipnorm=` on the optimizer) or check the data for NaN/Inf. "
                f"Received: loss={loss} at step={self.bad_step}",
                step=self.bad_step,
                loss=loss,
            )
