"""vLLM under torchrun: each rank a plain one-GPU vLLM engine, the ranks meeting through
torchrun's store with no process group (utils/runtime/store_ranks.py, docs/distributed.md).

The store ranks are tested in one process with threads; the runs use a stand-in ``vllm``
package, written into a temporary folder, that checks what the real one needs of the process
it starts in, on a simulated node of GPUs (tests/gpu_node.py)."""

import json
import os
import shutil
import subprocess
import sys
import threading
from datetime import timedelta

import numpy as np
import pytest
from conftest import REPO
from test_distributed_embedding import SIZES, error_lines, shard_names, write_shards
from test_embedding import MINILM  # its tokenizer; skips with the reason there

from utils.errors import InputError
from utils.runtime.distributed import RankError, rank_timeouts, torchrun_place
from utils.runtime.store_ranks import (
    PeerFailed,
    StoreChannel,
    StoreRanks,
    torchrun_hidden,
)

TIMEOUTS = (timedelta(seconds=20), timedelta(seconds=20))


def on_ranks(size, work):
    """``work(ranks)`` on ``size`` store ranks in threads, sharing one in-memory store; each
    rank's result (or exception), in rank order."""
    import torch.distributed as dist

    store, results = dist.HashStore(), [None] * size

    def run(rank):
        ranks = StoreRanks(rank, size, grouped=True,
                           channel=StoreChannel(store, rank, size, TIMEOUTS))
        try:
            results[rank] = work(ranks)
        except Exception as err:  # noqa: BLE001 - handed to the test as the result
            results[rank] = err

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_store_ranks_gather_in_rank_order():
    def work(ranks):
        rows = np.arange(ranks.rank * 2, dtype=np.float32).reshape(ranks.rank, 2)
        return (ranks.gather_objects({"rank": ranks.rank}), ranks.gather_arrays(rows),
                ranks.gather_fixed(np.array([ranks.rank, 10])),
                ranks.broadcast(np.array([ranks.rank * 7]), src=2),
                ranks.sum_float64(0.5 * ranks.rank))

    for objects, rows, fixed, sent, total in on_ranks(3, work):
        assert objects == [{"rank": 0}, {"rank": 1}, {"rank": 2}]
        assert rows.dtype == np.float32 and rows.tolist() == [[0, 1], [0, 1], [2, 3]]
        assert fixed.tolist() == [[0, 10], [1, 10], [2, 10]]
        assert sent.tolist() == [14] and total == 1.5


def test_store_ranks_agree_on_the_lowest_failing_rank():
    def work(ranks):
        with ranks.phase():
            if ranks.rank:
                raise InputError(f"bad shard on rank {ranks.rank}")
        return "passed"

    results = on_ranks(3, work)
    assert all(isinstance(err, RankError) and str(err) == "bad shard on rank 1"
               for err in results)


def test_a_rank_that_leaves_on_a_failure_releases_the_waiting_ones():
    def work(ranks):
        if ranks.rank == 1:
            ranks.channel.mark_failed()  # what the CLI does before the process exits
            return "left"
        return ranks.gather_objects("waiting", patient=True)

    results = on_ranks(3, work)
    assert results[1] == "left"
    assert all(isinstance(results[r], PeerFailed) and str(results[r]) == "rank 1 failed"
               for r in (0, 2))


def test_a_wait_past_the_limit_names_it():
    import torch.distributed as dist

    channel = StoreChannel(dist.HashStore(), 0, 2, (timedelta(seconds=0.3),) * 2)
    with pytest.raises(dist.DistStoreError, match="no word from the other ranks after 0 s"):
        channel.exchange(b"alone")


def test_rank_0_leaves_last():
    def work(ranks):
        ranks.leave()
        return ranks.channel.store.check([f"left/{r}" for r in range(1, ranks.size)])

    assert on_ranks(3, work)[0] is True


def test_torchrun_variables_are_hidden_in_the_block_and_back_after():
    environ = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "node1", "MASTER_PORT": "29500",
               "TORCHELASTIC_USE_AGENT_STORE": "True", "CUDA_VISIBLE_DEVICES": "1",
               "HOME": "/home/u"}
    before = dict(environ)
    with torchrun_hidden(environ) as hidden:
        assert environ == {"CUDA_VISIBLE_DEVICES": "1", "HOME": "/home/u"}
        assert set(hidden) == set(before) - set(environ)
    assert environ == before
    with pytest.raises(RuntimeError), torchrun_hidden(environ):
        raise RuntimeError("vLLM failed to start")
    assert environ == before


def test_a_rank_s_place_and_limits_come_from_its_environment():
    environ = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
               "NOVELSUM_RANK_TIMEOUT_S": "60"}
    assert torchrun_place(environ) == (5, 8, 1, 4)
    assert torchrun_place({"RANK": "0", "WORLD_SIZE": "2"}) == (0, 2, 0, 2)
    assert rank_timeouts(environ) == (timedelta(seconds=60), timedelta(days=7))


# The stand-in: what vLLM needs of the process that builds LLM() (one GPU in view, no process
# group, no torchrun world), checked with its own list; vectors from a hash of the token ids.
FAKE_VLLM = '''
import hashlib, json, os
from types import SimpleNamespace

import numpy as np
import torch.distributed as dist

SEEN_BY_VLLM = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE")


class ModelRegistry:
    @staticmethod
    def get_supported_archs():
        return {"BertModel", "LlamaForCausalLM"}


class LLM:
    def __init__(self, model, runner, convert, max_model_len, **kwargs):
        if dist.is_initialized():
            raise RuntimeError("a torch.distributed process group exists")
        seen = [name for name in SEEN_BY_VLLM if name in os.environ]
        if seen:
            raise RuntimeError(f"torchrun variables in view: {seen}")
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        if not gpus.isdigit():
            raise RuntimeError(f"CUDA_VISIBLE_DEVICES={gpus!r}: not one GPU")
        if (runner, convert) != ("pooling", "embed"):
            raise RuntimeError(f"not an embedding model: {runner}, {convert}")
        with open(os.environ["FAKE_VLLM_LOG"], "a") as log:
            log.write(json.dumps({"gpu": gpus, "model": model}) + "\\n")
        if os.environ.get("FAKE_VLLM_FAIL_ON_GPU") == gpus:
            raise RuntimeError("CUDA out of memory (simulated)")
        self.max_model_len = max_model_len

    def embed(self, prompts, use_tqdm=True):
        return [SimpleNamespace(outputs=SimpleNamespace(embedding=self.vector(p)))
                for p in prompts]

    def vector(self, prompt):
        ids = prompt["prompt_token_ids"]
        if not 0 < len(ids) <= self.max_model_len:
            raise ValueError(f"{len(ids)} tokens, max_model_len {self.max_model_len}")
        digest = hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little")).standard_normal(
            16).tolist()
'''


@pytest.fixture(scope="module")
def fake_vllm(tmp_path_factory):
    """The environment of a run with the stand-in vllm, on a node of 4 GPUs, and its log of
    LLM() constructions (one JSON line each: the GPU it saw)."""
    root = tmp_path_factory.mktemp("fake_vllm")
    (root / "vllm").mkdir()
    (root / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    (root / "vllm-0.32.0.dist-info").mkdir()  # installed as the CUDA build is
    (root / "vllm-0.32.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)]),
            "TEST_NODE_GPUS": "4", "HF_HUB_OFFLINE": "1", "NOVELSUM_RANK_TIMEOUT_S": "120"}


def run_vllm(env, log, input_dir, output_dir, n_ranks=None, *extra):
    """embedding.py with ``--backend vllm``: one process, or ``n_ranks`` under torchrun."""
    launcher = [] if n_ranks is None else [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_ranks)]
    return subprocess.run(
        [sys.executable, *launcher, "tests/gpu_node.py", "embedding.py", "--input_dir",
         str(input_dir), "--model_path", MINILM, "--output_dir", str(output_dir), "--backend",
         "vllm", "--output_format", "npy", *extra],
        cwd=REPO, env={**env, "FAKE_VLLM_LOG": str(log)}, capture_output=True, text=True,
        timeout=300, check=False)


def constructions(log):
    return sorted(json.loads(line)["gpu"] for line in log.read_text().splitlines())


@pytest.fixture(scope="module")
def one_vllm_process(tmp_path_factory, fake_vllm):
    root = tmp_path_factory.mktemp("one_vllm_process")
    texts = write_shards(root / "text", SIZES)
    result = run_vllm(fake_vllm, root / "log", texts, root / "out", None, "--gpu_id", "0",
                      "--quiet")
    assert result.returncode == 0, result.stderr
    assert constructions(root / "log") == ["0"]
    return texts, root / "out"


def assert_same_vectors(folder, reference):
    assert shard_names(folder) == shard_names(reference)
    for shard in range(len(SIZES)):
        assert np.array_equal(np.load(folder / f"{shard}.npy"),
                              np.load(reference / f"{shard}.npy")), shard


@pytest.mark.slow
def test_two_vllm_ranks_write_what_one_process_writes(tmp_path, fake_vllm, one_vllm_process):
    texts, reference = one_vllm_process
    result = run_vllm(fake_vllm, tmp_path / "log", texts, tmp_path / "out", 2, "--quiet")
    assert result.returncode == 0, result.stderr
    assert constructions(tmp_path / "log") == ["0", "1"]  # GPU LOCAL_RANK, alone in view
    assert_same_vectors(tmp_path / "out", reference)
    assert result.stdout.startswith(f"embedded {sum(SIZES)} texts in {len(SIZES)} shard(s) "
                                    f"with vllm (auto) on 2 ranks, one GPU each from "
                                    f"cuda:0: ")
    record = json.loads((tmp_path / "out" / ".embedding_run.json").read_text())
    assert [(share["shards"], share["texts"]) for share in record["summary"]["per_rank"]] == [
        (3, 10), (2, 9)]


@pytest.mark.slow
def test_three_vllm_ranks_resume_with_one_rank_idle(tmp_path, fake_vllm, one_vllm_process):
    """Two shards left for three ranks: uneven work, and a rank that builds no engine at all,
    yet no rank waits on another's engine."""
    texts, reference = one_vllm_process
    shutil.copytree(reference, tmp_path / "out")
    (tmp_path / "out" / "1.npy").unlink()
    (tmp_path / "out" / "4.npy").unlink()
    result = run_vllm(fake_vllm, tmp_path / "log", texts, tmp_path / "out", 3, "--gpu_id", "1")
    assert result.returncode == 0, result.stderr
    assert constructions(tmp_path / "log") == ["1", "2"]  # --gpu_id 1: ranks 0 and 1
    assert result.stderr.count("skipping 3 shard(s) already embedded") == 1
    assert_same_vectors(tmp_path / "out", reference)


@pytest.mark.slow
def test_a_bad_shard_under_vllm_ranks_is_one_error_line(tmp_path, fake_vllm):
    texts = write_shards(tmp_path / "text", SIZES)
    (texts / "3.json").write_text(json.dumps(["fine", 42]))
    result = run_vllm(fake_vllm, tmp_path / "log", texts, tmp_path / "out", 2)
    assert error_lines(result) == [
        f"Error: {texts / '3.json'}: item 1: is neither text nor a conversation (found 42)"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "log").exists()


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.slow
def test_a_vllm_engine_that_fails_on_one_rank_is_one_error_line(tmp_path, fake_vllm, rank):
    """Not bad input: the failing rank says it once; the other, waiting on it through the
    store (no connection to see close), leaves in silence rather than report a stop."""
    texts = write_shards(tmp_path / "text", SIZES)
    result = run_vllm({**fake_vllm, "FAKE_VLLM_FAIL_ON_GPU": str(rank)}, tmp_path / "log",
                      texts, tmp_path / "out", 2, "--quiet")
    assert error_lines(result) == [
        f"Error: rank {rank}: --backend vllm: vLLM's engine did not start (CUDA out of memory "
        f"(simulated)); its messages are above (--verbose shows all of them)"]
    assert "Interrupted" not in result.stderr and "Aborted" not in result.stderr
    assert str(rank) in constructions(tmp_path / "log")  # the other may be stopped before
