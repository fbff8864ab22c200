"""A small deterministic training job: a nearest-centroid classifier on the digits CSVs.

Standard library only, so it runs on any image with a Python 3 (the demo's is the agent image's
Debian Python). Reads only from --data and writes only to --out, so the certificate covers
everything it used and everything it made. Same inputs, same weights, byte for byte.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TEST_EVERY = 4  # every 4th image is held out for the test accuracy (25 %), the rest trains


def read_rows(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split(",")] for line in path.read_text().splitlines() if line]


def nearest(centroids: dict[int, list[float]], x: list[float]) -> int:
    return min(centroids, key=lambda c: sum((a - b) ** 2 for a, b in zip(centroids[c], x, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    features = [[v / 16.0 for v in row] for row in read_rows(args.data / "features.csv")]
    labels = [int(row[0]) for row in read_rows(args.data / "labels.csv")]
    train = [(x, y) for i, (x, y) in enumerate(zip(features, labels, strict=True)) if i % TEST_EVERY]
    test = [(x, y) for i, (x, y) in enumerate(zip(features, labels, strict=True)) if not i % TEST_EVERY]
    centroids: dict[int, list[float]] = {}
    for label in sorted(set(labels)):
        rows = [x for x, y in train if y == label]
        centroids[label] = [round(sum(column) / len(rows), 6) for column in zip(*rows, strict=True)]
    accuracy = sum(nearest(centroids, x) == y for x, y in test) / len(test)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = {"classes": sorted(centroids), "centroids": [centroids[c] for c in sorted(centroids)]}
    (args.out / "weights.json").write_text(json.dumps(weights, separators=(",", ":")) + "\n")
    (args.out / "model.json").write_text(
        json.dumps(
            {"model": "nearest-centroid", "inputs": 64, "classes": 10, "test_accuracy": round(accuracy, 4)}
        )
        + "\n"
    )
    print(f"trained on {len(train)} images, test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
