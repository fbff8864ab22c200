"""A small deterministic training job: logistic regression on the digits CSVs.

Reads only from --data and writes only to --out, so the certificate covers everything it used and
everything it made. Same inputs, same weights, byte for byte.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    features = np.loadtxt(args.data / "features.csv", delimiter=",") / 16.0
    labels = np.loadtxt(args.data / "labels.csv", delimiter=",").astype(int)
    x_train, x_test, y_train, y_test = train_test_split(features, labels, test_size=0.25, random_state=0)
    model = LogisticRegression(max_iter=2000, random_state=0).fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "weights.npz", "wb") as f:
        np.savez(f, coef=model.coef_, intercept=model.intercept_, classes=model.classes_)
    (args.out / "model.json").write_text(
        json.dumps(
            {"model": "logistic-regression", "inputs": 64, "classes": 10, "test_accuracy": round(accuracy, 4)}
        )
        + "\n"
    )
    print(f"trained on {len(y_train)} images, test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
