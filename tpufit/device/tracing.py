"""How a loop program's Python becomes its graph: AutoGraph for the loop alone.

A loop program's `while` and `for ... in tf.range` need AutoGraph, which
converts a function and, by default, everything it calls. Everything the loop
calls (reading and timing a batch, the stopping signal, the step counters)
has no Python control flow on tensors, and the step itself is traced as
written, as Keras traces its steps. Converting all of that cost a new
model's first call 0.1-0.25 s of CPU time for nothing: `converted_alone`
converts the loop function only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf


def converted_alone(function: Callable) -> Callable:
    """`function` converted by AutoGraph on its own: what it calls is traced as written.

    The conversion happens at the first call (inside the first trace), once.

    Args:
        function: A function (or method) with Python control flow on tensors.

    Returns:
        A function taking the same arguments, left alone by an enclosing
        AutoGraph conversion.
    """
    converted: list[Callable] = []

    @tf.autograph.experimental.do_not_convert
    def run(*args: Any, **kwargs: Any) -> Any:
        if not converted:
            converted.append(tf.autograph.to_graph(function, recursive=False))
        return converted[0](*args, **kwargs)

    return run
