"""Write scikit-learn's bundled digits data set (1,797 8x8 images) as CSV files: the run's input.

The data ships inside the scikit-learn package, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    np.savetxt(out / "features.csv", digits.data, fmt="%d", delimiter=",")
    np.savetxt(out / "labels.csv", digits.target, fmt="%d", delimiter=",")
    (out / "README.txt").write_text("scikit-learn digits: features.csv (64 pixel values a row), labels.csv\n")


if __name__ == "__main__":
    main()
