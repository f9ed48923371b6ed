"""Train a small CNN on scikit-learn's bundled 8x8 digit images through tpufit.

Run:  python examples/digits_cnn.py            (about half a minute on two CPU cores)
      python examples/digits_cnn.py --smoke    (a few steps: checks that it runs)
Needs no download.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import tpufit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="train one short epoch only")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    # 1,797 images of 8x8 pixels, values 0..16 -> [rows, 8, 8, 1] floats in [0, 1].
    images, labels = load_digits(return_X_y=True)
    images = (images / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=0, stratify=labels
    )
    if args.smoke:
        x_train, y_train = x_train[:256], y_train[:256]

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),  # 4x4
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10),  # logits
        ]
    )

    tm = tpufit.TPUModel(model, iterations_per_loop=20)
    tm.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    tm.fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=1 if args.smoke else 20,
        validation_data=(x_test, y_test),
        verbose=0 if args.smoke else 2,
    )

    scores = tm.evaluate(x_test, y_test, batch_size=256, return_dict=True, verbose=0)
    logits = tm.predict(x_test, batch_size=256, verbose=0)  # exactly len(x_test) rows

    acc_evaluate = float(scores["accuracy"])
    acc_predict = float(np.mean(np.argmax(logits, axis=-1) == y_test))
    if abs(acc_evaluate - acc_predict) > 0.5 / len(y_test):
        print("FAIL: evaluate and predict disagree", file=sys.stderr)
        return 1
    if not args.smoke and acc_evaluate < 0.95:
        print(f"FAIL: accuracy {acc_evaluate:.4f} < 0.95", file=sys.stderr)
        return 1
    print(f"digits CNN: test accuracy {acc_evaluate:.4f} (evaluate and predict agree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
