"""Logical CPU devices for the replica benchmarks, set before TensorFlow's runtime starts."""

import os


def split_cpu(replicas: int) -> None:
    """Splits the CPU into ``replicas`` logical devices (nothing to do for one).

    Call it before anything starts TensorFlow's runtime: importing Keras may,
    so this module imports nothing else of the benchmarks.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
    if replicas <= 1:
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas
    )
