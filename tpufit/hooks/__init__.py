"""Hooks: code that runs on the host between a run's device loops.

`Hook` and its events are in `tpufit.hooks.base`; the built-in hooks each
live in a module of their own.
"""

from tpufit.hooks.base import Hook, HookList, Run, RunContext, RunValues, StepTensors

__all__ = ["Hook", "HookList", "Run", "RunContext", "RunValues", "StepTensors"]
