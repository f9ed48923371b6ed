"""Whether a program's step runs XLA-compiled: as asked, or, for "auto", by a fixed rule.

XLA is not always the faster choice: on a CPU it fuses a small dense model's
many ops (about 1.5x faster for the benchmark MLP) but its convolutions are
about 3x slower than TensorFlow's oneDNN kernels (the benchmark CNN). XLA and
the plain kernels also round differently and draw other random numbers, so
the choice changes results in the last bits: it must never depend on timings
(which change with the machine's load), or the same seed and data would not
give the same weights. `"auto"` therefore decides from the step itself, once:
XLA wherever it compiles (one replica, not a TPU), except a step with
convolutions on a machine without accelerators, and, without a warning, a
step whose data or outputs hold strings (XLA has no string type) or whose data
holds ragged or sparse tensors (XLA has no such tensors), or whose replicas are one device on each
of several workers (`MultiWorkerMirroredStrategy`).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tpufit import errors


def _is_tpu(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.TPUStrategy)


def _holds_strings(element_spec) -> bool:
    # Expanded: several replicas' element spec holds composite per-replica specs.
    specs = tf.nest.flatten(element_spec, expand_composites=True)
    return any(spec.dtype == tf.string for spec in specs)


def _holds_composites(element_spec) -> bool:
    # One replica's element spec: its parts as the step receives them.
    composites = (tf.RaggedTensorSpec, tf.SparseTensorSpec)
    return any(isinstance(spec, composites) for spec in tf.nest.flatten(element_spec))


def _example(spec: tf.TypeSpec) -> tf.Tensor | None:
    """Zeros shaped as `spec`, for lowering a step; None for an optional input left out."""
    if isinstance(spec, tf.NoneTensorSpec):
        return None
    return tf.zeros([d or 1 for d in spec.shape], spec.dtype)


# TensorFlow's convolution ops: XLA lowers each to an HLO convolution.
_CONVOLUTIONS = frozenset(
    {
        "Conv",
        "Conv2D",
        "Conv2DBackpropFilter",
        "Conv2DBackpropFilterV2",
        "Conv2DBackpropInput",
        "Conv2DBackpropInputV2",
        "Conv3D",
        "Conv3DBackpropFilter",
        "Conv3DBackpropFilterV2",
        "Conv3DBackpropInput",
        "Conv3DBackpropInputV2",
        "DepthwiseConv2dNative",
        "DepthwiseConv2dNativeBackpropFilter",
        "DepthwiseConv2dNativeBackpropInput",
    }
)


def _convolves(graph: tf.Graph) -> bool:
    """Whether `graph` itself (not the functions it calls) holds a convolution op."""
    return any(op.type in _CONVOLUTIONS for op in graph.get_operations())


def _cpu_only() -> bool:
    return all(device.device_type == "CPU" for device in tf.config.list_physical_devices())


class JitChoice:
    """Holds a program's step function and whether it runs with XLA.

    Args:
        requested: `True`, `False` or `"auto"` (see `RunConfig`).
        name: The mode, for messages.
    """

    def __init__(self, requested: bool | str, name: str) -> None:
        self.requested = requested
        self.name = name
        self.steps: dict[bool, Callable] = {}

    @property
    def jit_compile(self) -> bool | None:
        """Whether the step runs with XLA; `None` before the step is prepared."""
        return next(iter(self.steps)) if self.steps else None

    def prepare(self, strategy: tf.distribute.Strategy, one_step: Callable, element_spec) -> None:
        """Makes the step function for `one_step`, once.

        Raises:
            InvalidArgumentError: `jit_compile=True` for a step XLA cannot compile.
        """
        if self.steps:
            return
        # Not inlined (public tf.function argument, TF's own attribute): the step stays one
        # call op, so the program's clock reads before and after it; inlined, its ops were
        # reordered around the clock. tests/run/test_run_stats.py fails if this stops holding.
        plain = tf.function(one_step, experimental_attributes={"_noinline": True})
        if self.requested is False or _is_tpu(strategy):
            self.steps = {False: plain}  # A TPU compiles every replica step with XLA anyway.
            return
        replicas = strategy.num_replicas_in_sync
        if _holds_strings(element_spec):
            reason = "its data holds strings, which XLA does not take"
            if self.requested == "auto":
                # As Keras's "auto" for its string layers: no XLA, and nothing to tell.
                self.steps = {False: plain}
                return
        elif replicas > 1 and len(strategy.extended.worker_devices) > 1:
            reason = (
                f"the strategy runs {len(strategy.extended.worker_devices)} replicas in one "
                "program, and XLA on CPU/GPU compiles a step for one device"
            )
        elif replicas > 1:
            # One device on each worker: nothing the user could change, so quiet, as for strings.
            reason = f"its {replicas} replicas are on {replicas} workers, joined by collectives"
            if self.requested == "auto":
                self.steps = {False: plain}
                return
        elif _holds_composites(element_spec):
            reason = "its data holds ragged or sparse tensors, which XLA does not take"
            if self.requested == "auto":
                # As Keras runs them: no XLA, and nothing to tell.
                self.steps = {False: plain}
                return
        else:
            compiled = tf.function(one_step, jit_compile=True)
            try:
                # Lowering to HLO finds unsupported ops without running anything.
                example = tf.nest.map_structure(_example, element_spec)
                if self.requested == "auto" and _cpu_only():
                    # A convolution in the step's own graph settles it: no XLA, and no lowering
                    # (0.3 s of the benchmark CNN's first fit). Those it calls are in the HLO.
                    if _convolves(compiled.get_concrete_function(example).graph):
                        self.steps = {False: plain}
                        return
                hlo = compiled.experimental_get_compiler_ir(example)(stage="hlo")
            except Exception as error:  # noqa: BLE001 - any failure means "no XLA".
                if self.requested == "auto" and _holds_strings(
                    plain.get_concrete_function(example).structured_outputs
                ):
                    # Strings handed back (ragged or sparse predictions, serialized for the
                    # outfeed): quiet, as for string data.
                    self.steps = {False: plain}
                    return
                reason = f"XLA cannot compile it ({str(error).splitlines()[0][:300]})"
            else:
                slower = self.requested == "auto" and _cpu_only() and " convolution(" in hlo
                # Measured: XLA's CPU convolutions are about 3x slower than oneDNN's.
                self.steps = {False: plain} if slower else {True: compiled}
                return
        if self.requested is True:
            raise errors.InvalidArgumentError(
                f"jit_compile=True was asked for the {self.name} step, but {reason}. "
                'Use jit_compile="auto" or False. Received: jit_compile=True'
            )
        errors.warn(f"tpufit: the {self.name} step runs without XLA: {reason}.")
        self.steps = {False: plain}
