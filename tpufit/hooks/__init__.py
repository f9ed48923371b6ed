"""Hooks: code that runs on the host between a run's device loops.

`Hook` and its events are in `tpufit.hooks.base`; each built-in hook lives in
a module of its own.
"""

from tpufit.hooks.base import Hook, HookList, Run, RunContext, RunValues, StepTensors
from tpufit.hooks.logger import LoggingHook
from tpufit.hooks.nan_guard import NanGuardHook
from tpufit.hooks.profiler import ProfilerHook
from tpufit.hooks.step_log import StepLogHook
from tpufit.hooks.stop import StopAtStepHook
from tpufit.hooks.summary import SummaryHook

__all__ = [
    "Hook",
    "HookList",
    "LoggingHook",
    "NanGuardHook",
    "ProfilerHook",
    "Run",
    "RunContext",
    "RunValues",
    "StepLogHook",
    "StepTensors",
    "StopAtStepHook",
    "SummaryHook",
]
