"""Train a small MLP on scikit-learn's bundled digits through tpufit.

Run:  python examples/digits_mlp.py
      python examples/digits_mlp.py --smoke    (a few steps: checks that it runs)
Needs no download; takes well under two minutes on two CPU cores.
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

    # 1,797 8x8 images, pixel values 0..16 -> floats in [0, 1].
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    if args.smoke:
        x_train, y_train = x_train[:256], y_train[:256]

    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),  # logits
        ]
    )

    # The one line that differs from plain Keras: wrap the model.
    tm = tpufit.TPUModel(model, iterations_per_loop=20)
    tm.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    tm.fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=1 if args.smoke else 30,
        validation_data=(x_test, y_test),
        verbose=0 if args.smoke else 2,
    )

    scores = tm.evaluate(x_test, y_test, batch_size=256, return_dict=True, verbose=0)
    logits = tm.predict(x_test, batch_size=256, verbose=0)  # exactly len(x_test) rows

    acc_evaluate = float(scores["accuracy"])
    acc_predict = float(np.mean(np.argmax(logits, axis=-1) == y_test))
    print(f"test accuracy (evaluate):        {acc_evaluate:.4f}")
    print(f"test accuracy (argmax(predict)): {acc_predict:.4f}")

    # Both count the same correct rows, so they differ by far less than one row.
    if abs(acc_evaluate - acc_predict) > 0.5 / len(y_test):
        print("FAIL: evaluate and predict disagree", file=sys.stderr)
        return 1
    if not args.smoke and acc_evaluate < 0.95:
        print(f"FAIL: accuracy {acc_evaluate:.4f} < 0.95", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
