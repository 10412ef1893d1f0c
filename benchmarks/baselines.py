"""Straightforward restatements of the published algorithms, used only as benchmark baselines.

They follow the reference scripts' method step by step (full n x n matrix; for NovelSum one
density search per (beta, k) and one sort per row per grid point; for NovelSelect all distances
recomputed and every list re-sorted at every step), on the CPU in float32, so that our scripts
can be timed against them on the same machine and checked for the same numbers.

    python benchmarks/baselines.py novelsum TARGET.json REF_DIR OUT.csv
    python benchmarks/baselines.py novelselect EMB_DIR K OUT.json
"""

import csv
import json
import sys
from pathlib import Path

import faiss
import numpy as np

NEIGHBORS, DENSITY_POWERS, DISTANCE_POWERS = [5, 10], [0, 0.25, 0.5], [0, 1, 2]


def load_folder(folder):
    files = sorted(Path(folder).glob("*.json"), key=lambda p: int(p.stem))
    return np.concatenate([np.array(json.loads(f.read_text()), dtype=np.float32) for f in files])


def density_dropping_first(reference, queries, k, beta):
    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(np.unique(reference, axis=0))
    sq_distances, _ = index.search(queries, k + 1)
    return 1 / np.power(sq_distances[:, 1:].mean(axis=1) + 1e-9, beta)


def weighted_row_average(row, alpha):
    order = np.argsort(row)
    return np.average(row[order], weights=1 / np.power(np.arange(1, len(row) + 1), alpha))


def novelsum_baseline(target_path, reference_dir, output_csv):
    target = np.array(json.loads(Path(target_path).read_text()), dtype=np.float32)
    reference = load_folder(reference_dir)
    unit = target / np.linalg.norm(target, axis=1, keepdims=True)
    distances = 1 - unit @ unit.T
    row = {"Dataset Name": Path(target_path).stem}
    for beta in DENSITY_POWERS:
        for k in NEIGHBORS:
            densities = density_dropping_first(reference, target, k, beta)
            for alpha in DISTANCE_POWERS:
                weighted = distances * densities[:, None]
                row[f"neighbor_{k}_density_{beta}_distance_{alpha}"] = np.mean(
                    np.apply_along_axis(weighted_row_average, 1, weighted, alpha))
    row["cos_distance"] = np.mean(distances)
    with open(output_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)


def novelselect_baseline(embedding_dir, k, output_json, neighbors=10, density_power=0.5,
                         distance_power=1.0, seed=42):
    pool = load_folder(embedding_dir)
    n = len(pool)
    unit = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    density = density_dropping_first(pool, pool, neighbors, density_power).astype(np.float32)
    picks = [np.random.RandomState(seed).randint(0, n)]
    for _ in range(1, k):
        values = (1 - unit @ unit[picks].T) * (density[:, None] + density[picks][None, :])
        ranks = np.argsort(np.argsort(values, axis=1), axis=1) + 1
        novelty = (values / np.power(ranks, distance_power)).mean(axis=1)
        novelty[picks] = -np.inf
        picks.append(int(np.argmax(novelty)))
    Path(output_json).write_text(json.dumps(picks))


if __name__ == "__main__":
    if sys.argv[1] == "novelsum":
        novelsum_baseline(*sys.argv[2:5])
    else:
        novelselect_baseline(sys.argv[2], int(sys.argv[3]), sys.argv[4])
