"""Train keras.io's GAN (its own `compile` and `train_step`, no `call`) through tpufit.

The generator learns to draw scikit-learn's 8x8 digits (no download). The model is
the "Customizing what happens in fit()" GAN of keras.io, unchanged: tpufit runs its
`train_step` inside looped device programs, with its two optimizers.

Run:  python examples/gan.py            (about half a minute on two CPU cores)
      python examples/gan.py --smoke    (a few steps: checks that it runs)
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

import tpufit

LATENT_DIM = 16


class GAN(keras.Model):
    """A generator and a discriminator trained against each other (keras.io's GAN)."""

    def __init__(self, discriminator: keras.Model, generator: keras.Model, latent_dim: int):
        super().__init__()
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.seed_generator = keras.random.SeedGenerator(1337)

    def compile(
        self,
        d_optimizer: keras.optimizers.Optimizer,
        g_optimizer: keras.optimizers.Optimizer,
        loss_fn: keras.losses.Loss,
    ) -> None:
        """Takes one optimizer per network instead of Keras's `compile` arguments.

        Args:
            d_optimizer: the discriminator's optimizer.
            g_optimizer: the generator's optimizer.
            loss_fn: the loss both networks use, on logits.
        """
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn
        self.d_loss_metric = keras.metrics.Mean(name="d_loss")
        self.g_loss_metric = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self) -> list:
        return [self.d_loss_metric, self.g_loss_metric]

    def train_step(self, real_images):
        batch_size = ops.shape(real_images)[0]

        # Train the discriminator on generated (label 1) and real (label 0) images,
        # with a little label noise (keras.io's trick).
        latent = keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)
        combined = ops.concatenate([self.generator(latent), real_images], axis=0)
        labels = ops.concatenate([ops.ones((batch_size, 1)), ops.zeros((batch_size, 1))], axis=0)
        labels += 0.05 * keras.random.uniform(ops.shape(labels), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(combined))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(
            zip(grads, self.discriminator.trainable_weights, strict=True)
        )

        # Train the generator to make the discriminator say "real" (label 0).
        latent = keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            predictions = self.discriminator(self.generator(latent))
            g_loss = self.loss_fn(ops.zeros((batch_size, 1)), predictions)
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights, strict=True))

        self.d_loss_metric.update_state(d_loss)
        self.g_loss_metric.update_state(g_loss)
        return {"d_loss": self.d_loss_metric.result(), "g_loss": self.g_loss_metric.result()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="train one short epoch only")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    images, labels = load_digits(return_X_y=True)
    images = (images / 16.0).astype("float32")  # [rows, 64] in [0, 1]
    if args.smoke:
        images = images[:256]
    dataset = tf.data.Dataset.from_tensor_slices(images).shuffle(2048, seed=0).batch(64)

    discriminator = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128),
            keras.layers.LeakyReLU(0.2),
            keras.layers.Dense(64),
            keras.layers.LeakyReLU(0.2),
            keras.layers.Dense(1),  # logit: "generated"
        ],
        name="discriminator",
    )
    generator = keras.Sequential(
        [
            keras.Input((LATENT_DIM,)),
            keras.layers.Dense(64),
            keras.layers.LeakyReLU(0.2),
            keras.layers.Dense(128),
            keras.layers.LeakyReLU(0.2),
            keras.layers.Dense(64, activation="sigmoid"),  # pixels in [0, 1]
        ],
        name="generator",
    )
    gan = GAN(discriminator, generator, LATENT_DIM)

    tm = tpufit.TPUModel(gan, iterations_per_loop=14)
    tm.compile(
        d_optimizer=keras.optimizers.Adam(5e-4),
        g_optimizer=keras.optimizers.Adam(5e-4),
        loss_fn=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    history = tm.fit(dataset, epochs=1 if args.smoke else 60, verbose=0 if args.smoke else 2)

    # After fit, `gan` (and its generator) hold the trained weights: draw with plain Keras.
    latent = keras.random.normal((500, LATENT_DIM), seed=7)
    drawn = keras.ops.convert_to_numpy(generator(latent))

    # A digit classifier trained on the real images judges the drawings: how sure it
    # is of their class, and how many of the 10 classes they cover.
    judge = LogisticRegression(max_iter=1000).fit(images, labels[: len(images)])
    confidence = judge.predict_proba(drawn).max(axis=1)
    classes = len(np.unique(judge.predict(drawn)))
    d_loss, g_loss = history.history["d_loss"][-1], history.history["g_loss"][-1]
    if not np.isfinite([d_loss, g_loss]).all():
        print(f"FAIL: losses d {d_loss}, g {g_loss}", file=sys.stderr)
        return 1
    print(
        f"GAN: {tm.global_step} steps, d_loss {d_loss:.3f}, g_loss {g_loss:.3f}; "
        f"drawn digits judged with confidence {confidence.mean():.2f}, covering "
        f"{classes} of 10 classes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
