"""tpufit: the TPUEstimator way of training, for any Keras 3 model.

Wrap a model in `TPUModel` and call the `fit` / `evaluate` / `predict` you
know; they run as looped device programs fed by a static-shape, padded infeed,
with exact results.
"""

__version__ = "0.1.0"

try:
    import tensorflow as _tf  # noqa: F401
except ImportError as _error:  # pragma: no cover - exercised in a bare venv only.
    from tpufit.errors import MissingTensorFlowError

    raise MissingTensorFlowError(
        "tpufit needs TensorFlow, which is not installed. From your clone of tpufit, "
        "install it with the TensorFlow build for your hardware: "
        "`pip install -e \".[cpu]\"` (tensorflow-cpu), `pip install -e \".[gpu]\"` "
        "(tensorflow with CUDA) or `pip install -e \".[tpu]\"` (tensorflow-tpu)."
    ) from _error

from tpufit import hooks
from tpufit.attach import attach, detach
from tpufit.config import RunConfig, WarmStartSettings
from tpufit.data.context import TPUContext
from tpufit.errors import (
    IncompatibleCheckpointError,
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteLossError,
    NotCompiledError,
    TPUFitError,
    WorkerLostError,
)
from tpufit.hooks import (
    Hook,
    LoggingHook,
    NanGuardHook,
    ProfilerHook,
    Run,
    RunContext,
    RunValues,
    StepTensors,
    StopAtStepHook,
    SummaryHook,
)
from tpufit.hooks.keras_callbacks import KerasCallbackHook
from tpufit.hooks.progress_bar import ProgressHook
from tpufit.model import TPUModel
from tpufit.run.stats import RunStats

__all__ = [
    "Hook",
    "IncompatibleCheckpointError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "KerasCallbackHook",
    "LoggingHook",
    "NanGuardHook",
    "NonFiniteLossError",
    "NotCompiledError",
    "ProfilerHook",
    "ProgressHook",
    "Run",
    "RunConfig",
    "RunStats",
    "RunContext",
    "RunValues",
    "StepTensors",
    "StopAtStepHook",
    "SummaryHook",
    "TPUContext",
    "TPUFitError",
    "TPUModel",
    "WorkerLostError",
    "WarmStartSettings",
    "__version__",
    "attach",
    "detach",
    "hooks",
]
