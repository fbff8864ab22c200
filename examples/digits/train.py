"""A small deterministic training job: a nearest-centroid classifier on the digits CSVs.

Standard library only, so it runs on any image with a Python 3 (the demo's is the agent image's
Debian Python). Reads only from --data (and --base) and writes only to --out, so the certificate
covers everything it used and everything it made. Same inputs, same weights, byte for byte.

With --base DIR it fine-tunes an earlier run's model: each class's centroid starts from the base
weights and moves halfway to the training images' mean. The demo's second step gives it the first
run's certified output, so the second certificate records the first as its parent (lineage).
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
    parser.add_argument("--base", type=Path, help="an earlier run's output (weights.json) to fine-tune")
    args = parser.parse_args()
    features = [[v / 16.0 for v in row] for row in read_rows(args.data / "features.csv")]
    labels = [int(row[0]) for row in read_rows(args.data / "labels.csv")]
    train = [(x, y) for i, (x, y) in enumerate(zip(features, labels, strict=True)) if i % TEST_EVERY]
    test = [(x, y) for i, (x, y) in enumerate(zip(features, labels, strict=True)) if not i % TEST_EVERY]
    centroids: dict[int, list[float]] = {}
    for label in sorted(set(labels)):
        rows = [x for x, y in train if y == label]
        centroids[label] = [round(sum(column) / len(rows), 6) for column in zip(*rows, strict=True)]
    if args.base is not None:
        base = json.loads((args.base / "weights.json").read_text())
        for label, start in zip(base["classes"], base["centroids"], strict=True):
            centroids[label] = [round((a + b) / 2, 6) for a, b in zip(start, centroids[label], strict=True)]
    accuracy = sum(nearest(centroids, x) == y for x, y in test) / len(test)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = {"classes": sorted(centroids), "centroids": [centroids[c] for c in sorted(centroids)]}
    (args.out / "weights.json").write_text(json.dumps(weights, separators=(",", ":")) + "\n")
    (args.out / "model.json").write_text(
        json.dumps(
            {
                "model": "nearest-centroid",
                "inputs": 64,
                "classes": 10,
                "test_accuracy": round(accuracy, 4),
                "fine_tuned": args.base is not None,
            }
        )
        + "\n"
    )
    tuned = " (fine-tuned from --base)" if args.base is not None else ""
    print(f"trained on {len(train)} images{tuned}, test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
