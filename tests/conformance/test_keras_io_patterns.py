"""Conformance: the keras.io guides' own-step patterns, run through `attach`, give Keras's results.

Our own versions of "Customizing what happens in fit()" (a `train_step` with and
without compiled metrics, `sample_weight` unpacking, an own `test_step`), of
`predict_step` overrides, and of the GAN, WGAN-GP and VAE examples (own
`compile`, nested gradient tapes, a model without `call()`). Each case is plain
Keras code run once through `tpufit.attach` and once in plain Keras, from the
same weights, with a partial last batch (100 rows at batch 16 or 32).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import FEATURES, TinyGAN
from like_keras import (
    assert_same_history,
    assert_same_weights,
    evaluate_both,
    fit_both,
    predict_both,
    twins,
)

ROWS = 100


def regression_data(rows: int = ROWS):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(rows, FEATURES)).astype("float32")
    y = (x @ rng.normal(size=(FEATURES, 1)) + 0.1 * rng.normal(size=(rows, 1))).astype("float32")
    return x, y


def class_data(rows: int = ROWS, classes: int = 3):
    x, _ = regression_data(rows)
    return x, np.random.default_rng(6).integers(0, classes, size=rows)


def sgd():
    return keras.optimizers.SGD(0.05)


# --- A train_step of one's own, without compiled metrics ("Going lower-level") ----------------


class LowLevelRegressor(keras.Model):
    """Its own loss, trackers and `metrics`; compiled with an optimizer only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = keras.losses.MeanSquaredError()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mae_metric = keras.metrics.MeanAbsoluteError(name="mae")

    @property
    def metrics(self):
        return [self.loss_tracker, self.mae_metric]

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.loss_fn(y, y_pred)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        self.mae_metric.update_state(y, y_pred)
        return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

    def test_step(self, data):
        x, y = data
        y_pred = self(x, training=False)
        self.loss_tracker.update_state(self.loss_fn(y, y_pred))
        self.mae_metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


def low_level_regressor():
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    return LowLevelRegressor(inputs, keras.layers.Dense(1)(hidden))


def test_an_own_train_step_with_its_own_trackers_and_no_compiled_metrics_trains_as_keras():
    x, y = regression_data()
    ours, theirs, _ = twins(low_level_regressor, lambda: dict(optimizer=sgd()))
    mine, _ = fit_both(ours, theirs, x, y, batch_size=16, epochs=3)
    assert sorted(mine.history) == ["loss", "mae"]
    evaluate_both(ours, theirs, x, y, batch_size=16, return_dict=True)
    predict_both(ours, theirs, x, batch_size=16)


class LastBatchLoss(keras.Model):
    """Returns the step's raw loss, not a metric: Keras logs the last batch's value."""

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.ops.square(self(x, training=True) - y))
        self.optimizer.apply(
            tape.gradient(loss, self.trainable_variables), self.trainable_variables
        )
        return {"loss": loss, "rows": keras.ops.cast(keras.ops.shape(x)[0], "float32")}


def test_an_own_train_step_returning_raw_values_logs_each_epochs_last_batch_as_keras():
    def build():
        inputs = keras.Input((FEATURES,))
        return LastBatchLoss(inputs, keras.layers.Dense(1)(inputs))

    x, y = regression_data()
    ours, theirs, _ = twins(build, lambda: dict(optimizer=sgd()))
    mine, _ = fit_both(ours, theirs, x, y, batch_size=16, epochs=2)
    assert mine.history["rows"] == [4.0, 4.0]  # 100 rows at 16: the last batch has 4


# --- A train_step on the compiled loss and metrics, with sample weights ----------------------


class WeightedStepModel(keras.Model):
    """keras.io's "Supporting sample_weight & class_weight": unpacks, weights loss and metrics."""

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def weighted_step_classifier():
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return WeightedStepModel(inputs, keras.layers.Dense(3)(hidden))


def classifier_compile():
    return dict(
        optimizer=sgd(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="weighted_acc")],
    )


@pytest.mark.parametrize("weighting", ["none", "sample_weight", "class_weight"])
def test_an_own_train_step_unpacking_sample_weight_trains_as_keras(weighting):
    x, y = class_data()
    fit_kwargs = {
        "none": {},
        "sample_weight": {"sample_weight": np.linspace(0.1, 2.0, ROWS).astype("float32")},
        "class_weight": {"class_weight": {0: 0.5, 1: 2.0, 2: 1.0}},
    }[weighting]
    ours, theirs, _ = twins(weighted_step_classifier, classifier_compile)
    mine, _ = fit_both(ours, theirs, x, y, batch_size=16, epochs=2, **fit_kwargs)
    assert sorted(mine.history) == ["accuracy", "loss", "weighted_acc"]
    evaluate_both(ours, theirs, x, y, batch_size=16, return_dict=True)


# --- A test_step of one's own ("Providing your own evaluation step") -------------------------


class OwnTestStep(keras.Model):
    """Keras's train step, and an own `test_step` updating the compiled metrics and one more."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_error = keras.metrics.Mean(name="max_error")

    def test_step(self, data):
        x, y = data
        y_pred = self(x, training=False)
        loss = self.compute_loss(y=y, y_pred=y_pred)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            elif metric is not self.max_error:
                metric.update_state(y, y_pred)
        self.max_error.update_state(keras.ops.max(keras.ops.abs(y - y_pred)))
        return {m.name: m.result() for m in self.metrics}


def own_test_step_regressor():
    inputs = keras.Input((FEATURES,))
    return OwnTestStep(inputs, keras.layers.Dense(1)(inputs))


@pytest.mark.parametrize("return_dict", [False, True])
def test_an_own_test_step_evaluates_and_validates_as_keras(return_dict):
    x, y = regression_data()

    def compile_kwargs():
        return dict(optimizer=sgd(), loss="mse", metrics=["mae"])

    ours, theirs, _ = twins(own_test_step_regressor, compile_kwargs)
    mine, _ = fit_both(
        ours, theirs, x[:70], y[:70], batch_size=16, epochs=2, validation_data=(x[70:], y[70:])
    )
    assert "val_max_error" in mine.history
    evaluate_both(ours, theirs, x, y, batch_size=16, return_dict=return_dict)


# --- A predict_step of one's own ------------------------------------------------------------


class LabelPredictor(keras.Model):
    """`predict` gives a dict: the probabilities and the predicted class of every row."""

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        probabilities = keras.ops.softmax(self(x, training=False))
        return {"probabilities": probabilities, "label": keras.ops.argmax(probabilities, axis=-1)}


def label_predictor():
    inputs = keras.Input((FEATURES,))
    return LabelPredictor(inputs, keras.layers.Dense(3)(inputs))


@pytest.mark.parametrize("source", ["arrays", "dataset"])
def test_an_own_predict_step_returns_a_dict_row_for_row_as_keras(source):
    x, _ = class_data(ROWS + 1)
    data = x if source == "arrays" else tf.data.Dataset.from_tensor_slices(x).batch(16)
    ours, theirs, _ = twins(label_predictor)
    predictions = predict_both(ours, theirs, data, batch_size=16 if source == "arrays" else None)
    assert predictions["label"].shape == (ROWS + 1,)


# --- GANs: their own compile, two optimizers, nested tapes ----------------------------------


# The GANs (and the VAE) draw random numbers in their steps: XLA's stateless random
# kernels draw other numbers than TensorFlow's, and tpufit's `jit_compile="auto"` picks
# XLA where Keras's does not (on a CPU); even `jit_compile=True` for both differs, as
# tpufit runs an own step's first step eagerly. So these cases compile both models
# with `jit_compile=False`, the same argument for both.


class GAN(TinyGAN):
    """conftest's `TinyGAN`, its `compile` passing Keras's own arguments on."""

    def compile(self, d_optimizer, g_optimizer, loss_fn, **kwargs):
        keras.Model.compile(self, **kwargs)
        self.d_optimizer, self.g_optimizer, self.loss_fn = d_optimizer, g_optimizer, loss_fn


def gan_compile():
    return dict(
        d_optimizer=keras.optimizers.Adam(1e-3),
        g_optimizer=keras.optimizers.Adam(1e-3),
        loss_fn=keras.losses.BinaryCrossentropy(from_logits=True),
        jit_compile=False,
    )


def test_a_gan_with_its_own_compile_trains_both_networks_as_keras():
    x, _ = regression_data()
    ours, theirs, _ = twins(GAN, gan_compile)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(32)
    mine, _ = fit_both(ours, theirs, dataset, epochs=2)
    assert sorted(mine.history) == ["d_loss", "g_loss"]
    assert ours.d_optimizer.iterations.numpy() == theirs.d_optimizer.iterations.numpy() == 8


class WGANGP(keras.Model):
    """keras.io's WGAN-GP: critic steps with a gradient penalty from a nested tape."""

    def __init__(self, critic_steps: int = 2, gp_weight: float = 10.0):
        super().__init__()
        self.critic = keras.Sequential(
            [
                keras.Input((FEATURES,)),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(1),
            ]
        )
        self.generator = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(FEATURES),
            ]
        )
        self.critic_steps, self.gp_weight = critic_steps, gp_weight
        self.seeds = keras.random.SeedGenerator(11)

    def compile(self, d_optimizer, g_optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    def call(self, x):
        return self.critic(x)

    def gradient_penalty(self, real, fake):
        alpha = keras.random.uniform((keras.ops.shape(real)[0], 1), seed=self.seeds)
        interpolated = real + alpha * (fake - real)
        with tf.GradientTape() as tape:
            tape.watch(interpolated)
            scores = self.critic(interpolated, training=True)
        gradients = tape.gradient(scores, interpolated)
        norm = keras.ops.sqrt(keras.ops.sum(keras.ops.square(gradients), axis=1) + 1e-12)
        return keras.ops.mean(keras.ops.square(norm - 1.0))

    def train_step(self, real):
        rows = keras.ops.shape(real)[0]
        for _ in range(self.critic_steps):
            noise = keras.random.normal((rows, 2), seed=self.seeds)
            with tf.GradientTape() as tape:
                fake = self.generator(noise, training=True)
                cost = keras.ops.mean(self.critic(fake, training=True)) - keras.ops.mean(
                    self.critic(real, training=True)
                )
                d_loss = cost + self.gp_weight * self.gradient_penalty(real, fake)
            weights = self.critic.trainable_weights
            self.d_optimizer.apply(tape.gradient(d_loss, weights), weights)
        noise = keras.random.normal((rows, 2), seed=self.seeds)
        with tf.GradientTape() as tape:
            g_loss = -keras.ops.mean(self.critic(self.generator(noise, training=True)))
        weights = self.generator.trainable_weights
        self.g_optimizer.apply(tape.gradient(g_loss, weights), weights)
        return {"d_loss": d_loss, "g_loss": g_loss}


def test_a_wgan_with_a_gradient_penalty_from_a_nested_tape_trains_as_keras():
    x, _ = regression_data()
    ours, theirs, _ = twins(
        WGANGP,
        lambda: dict(
            d_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5),
            g_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5),
            jit_compile=False,
        ),
    )
    mine, _ = fit_both(ours, theirs, x, batch_size=32, epochs=2)
    assert sorted(mine.history) == ["d_loss", "g_loss"]
    assert ours.d_optimizer.iterations.numpy() == 2 * 8  # two critic steps per batch


# --- Models without call(): only compile and train_step over built sub-models ----------------


class Sampling(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seeds = keras.random.SeedGenerator(3)

    def call(self, inputs):
        mean, log_var = inputs
        noise = keras.random.normal(keras.ops.shape(mean), seed=self.seeds)
        return mean + keras.ops.exp(0.5 * log_var) * noise


class VAE(keras.Model):
    """keras.io's VAE: an encoder and a decoder, a `train_step` and no `call()`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        inputs = keras.Input((FEATURES,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        mean, log_var = keras.layers.Dense(2)(hidden), keras.layers.Dense(2)(hidden)
        self.encoder = keras.Model(inputs, [mean, log_var, Sampling()([mean, log_var])])
        self.decoder = keras.Sequential(
            [
                keras.Input((2,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(FEATURES),
            ]
        )
        self.total = keras.metrics.Mean(name="loss")
        self.reconstruction = keras.metrics.Mean(name="reconstruction_loss")
        self.kl = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total, self.reconstruction, self.kl]

    def train_step(self, data):
        with tf.GradientTape() as tape:
            mean, log_var, z = self.encoder(data)
            reconstruction = self.decoder(z)
            reconstruction_loss = keras.ops.mean(
                keras.ops.sum(keras.ops.square(data - reconstruction), axis=1)
            )
            kl = -0.5 * (1 + log_var - keras.ops.square(mean) - keras.ops.exp(log_var))
            kl_loss = keras.ops.mean(keras.ops.sum(kl, axis=1))
            loss = reconstruction_loss + kl_loss
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        self.total.update_state(loss)
        self.reconstruction.update_state(reconstruction_loss)
        self.kl.update_state(kl_loss)
        return {m.name: m.result() for m in self.metrics}


class GANWithoutCall(GAN):
    """`GAN` whose `call` is Keras's own (it raises): only compile and train_step."""

    call = keras.Model.call


def test_a_vae_without_call_trains_on_its_sub_models_as_keras():
    x, _ = regression_data()
    ours, theirs, _ = twins(
        VAE, lambda: dict(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    )
    mine, _ = fit_both(ours, theirs, x, batch_size=32, epochs=2)
    assert sorted(mine.history) == ["kl_loss", "loss", "reconstruction_loss"]


def test_a_gan_without_call_trains_as_keras():
    x, _ = regression_data()
    ours, theirs, _ = twins(GANWithoutCall, gan_compile)
    fit_both(ours, theirs, tf.data.Dataset.from_tensor_slices(x).batch(32), epochs=2)
    assert_same_weights(ours.generator, theirs.generator)


# --- The plain-Keras baseline of the guide: no own step at all -------------------------------


def test_the_guides_starting_point_without_any_own_step_trains_as_keras():
    x, y = regression_data()

    def build():
        inputs = keras.Input((FEATURES,))
        return keras.Model(inputs, keras.layers.Dense(1)(inputs))

    ours, theirs, _ = twins(build, lambda: dict(optimizer="adam", loss="mse", metrics=["mae"]))
    mine, keras_history = fit_both(ours, theirs, x, y, batch_size=16, epochs=3)
    assert_same_history(mine, keras_history)
    evaluate_both(ours, theirs, x, y, batch_size=16)
