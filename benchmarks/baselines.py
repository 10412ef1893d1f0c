"""Straightforward restatements of the published algorithms, used only as benchmark baselines.

They follow the reference scripts' method step by step, with the same torch operations for the
distances, on the CPU in float32: for NovelSum the full n x n matrix filled from broadcast
500-row blocks of pairwise cosine similarity, one density search per (beta, k) and one sort per
row per grid point; for NovelSelect, at every step, all distances to the picks recomputed in
10,000-row batches and every candidate's list re-sorted and rank-weighted. Our scripts are
timed against them on the same machine and checked for the same numbers.

    python benchmarks/baselines.py novelsum TARGET.json REF_DIR OUT.csv
    python benchmarks/baselines.py novelselect EMB_DIR K OUT.json
"""

import csv
import json
import sys
from pathlib import Path

import faiss
import numpy as np
import torch

NEIGHBORS, DENSITY_POWERS, DISTANCE_POWERS = [5, 10], [0, 0.25, 0.5], [0, 1, 2]


def load_file(path):
    if path.suffix == ".npy":
        return np.load(path).astype(np.float32)
    return np.array(json.loads(path.read_text()), dtype=np.float32)


def load_folder(folder):
    files = sorted((p for p in Path(folder).iterdir() if p.suffix in (".json", ".npy")),
                   key=lambda p: int(p.stem))
    return np.concatenate([load_file(f) for f in files])


def density_dropping_first(reference, queries, k, beta):
    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(np.unique(reference, axis=0))
    sq_distances, _ = index.search(queries, k + 1)
    return 1 / np.power(sq_distances[:, 1:].mean(axis=1) + 1e-9, beta)


def weighted_row_average(row, alpha):
    order = np.argsort(row)
    return np.average(row[order], weights=1 / np.power(np.arange(1, len(row) + 1), alpha))


def full_cosine_distance_matrix(vectors, block=500):
    """The whole n x n matrix, block by block, from broadcast pairwise cosine similarity."""
    rows = torch.from_numpy(vectors)
    matrix = torch.zeros((len(rows), len(rows)))
    for i in range(0, len(rows), block):
        for j in range(0, len(rows), block):
            similarity = torch.nn.functional.cosine_similarity(
                rows[i:i + block, None, :], rows[None, j:j + block, :], dim=2)
            matrix[i:i + block, j:j + block] = 1 - similarity
    return matrix.numpy()


def novelsum_baseline(target_path, reference_dir, output_csv):
    target = load_file(Path(target_path))
    reference = load_folder(reference_dir)
    distances = full_cosine_distance_matrix(target)
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
                         distance_power=1.0, seed=42, batch=10000):
    pool = load_folder(embedding_dir)
    n = len(pool)
    unit = torch.nn.functional.normalize(torch.from_numpy(pool), dim=1)
    density = torch.from_numpy(
        density_dropping_first(pool, pool, neighbors, density_power).astype(np.float32))
    picks = [np.random.RandomState(seed).randint(0, n)]
    for _ in range(1, k):
        novelty = []
        for start in range(0, n, batch):
            values = (1 - unit[start:start + batch] @ unit[picks].T) * (
                density[start:start + batch, None] + density[picks][None, :])
            order = torch.sort(values, dim=1).indices
            ranks = torch.arange(1, len(picks) + 1, dtype=values.dtype)
            weights = torch.zeros_like(values).scatter_(
                1, order, (1 / ranks ** distance_power).expand_as(values).contiguous())
            novelty.append((values * weights).mean(dim=1))
        novelty = torch.cat(novelty)
        novelty[picks] = -float("inf")
        picks.append(int(novelty.argmax()))
    Path(output_json).write_text(json.dumps(picks))


if __name__ == "__main__":
    if sys.argv[1] == "novelsum":
        novelsum_baseline(*sys.argv[2:5])
    else:
        novelselect_baseline(sys.argv[2], int(sys.argv[3]), sys.argv[4])
