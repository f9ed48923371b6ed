"""Tests of tpufit/data/distributed.py: a dataset distributed by a strategy, as `x`.

On one replica, here with a `OneDeviceStrategy`'s distributed datasets (which,
unlike the default strategy's, are not the dataset itself). Several replicas:
tests/conformance/test_inputs_on_replicas.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import compile_args, keras_twin, tiny_data, tiny_model

import tpufit


def distributed(how: str, dataset: tf.data.Dataset):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    if how == "from_function":
        return strategy.distribute_datasets_from_function(lambda context: dataset)
    return strategy.experimental_distribute_dataset(dataset)


@pytest.mark.parametrize("how", ["experimental_distribute_dataset", "from_function"])
def test_a_distributed_dataset_trains_evaluates_and_predicts_as_keras_on_its_dataset(how):
    x, y = tiny_data(10)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    model = tiny_model()
    twin = keras_twin(model)
    tpufit.attach(model, iterations_per_loop=2)
    model.compile(**compile_args())
    history = model.fit(distributed(how, dataset), epochs=2, verbose=0).history
    expected = twin.fit(dataset, epochs=2, verbose=0).history
    for name, values in expected.items():
        np.testing.assert_allclose(history[name], values, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(
        model.evaluate(distributed(how, dataset), verbose=0),
        twin.evaluate(dataset, verbose=0),
        rtol=1e-5,
    )
    inputs = dataset.map(lambda x, y: x)
    np.testing.assert_allclose(
        model.predict(distributed(how, inputs), verbose=0),
        twin.predict(inputs, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_batch_size_for_a_distributed_dataset_is_an_error_naming_it():
    x, y = tiny_data(8)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    model = tiny_model()
    tpufit.attach(model)
    model.compile(**compile_args())
    with pytest.raises(tpufit.InvalidArgumentError, match="batch_size.*as they are"):
        model.evaluate(distributed("from_function", dataset), batch_size=8, verbose=0)
