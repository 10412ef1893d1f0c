"""Which backend and dtype embed a model: what the options ask for, checked before any model
loads, and for ``auto`` the fastest choice measured (benchmarks/embedding_cpu.py, whose table
is in docs/benchmarks.md)."""

import contextlib
from dataclasses import dataclass

from ..errors import InputError, setting
from .models import check_max_length, model_kind, normalises
from .vllm_engine import check_vllm_can_embed, vllm_build

BACKENDS = ("auto", "vllm", "transformers", "sentence-transformers")
DTYPES = ("auto", "float32", "bfloat16", "float16")

# (load or start-up seconds, texts per second once running) on the 744 example texts (mean 68
# tokens) on a 2-core AMD EPYC (Zen 4, AVX-512 with BF16), for all-MiniLM-L6-v2 and for a
# model of Qwen2.5-0.5B's shape (benchmarks/embedding_cpu.py; docs/benchmarks.md). Only their
# order is used: the same order is assumed on other CPUs (measured on this one alone).
MEASURED_CPU = {
    "sentence-transformers": {("sentence-transformers", "float32"): (5.0, 74.3),
                              ("sentence-transformers", "bfloat16"): (5.3, 129.7),
                              ("vllm", "float32"): (24.3, 113.3),
                              ("vllm", "bfloat16"): (24.8, 190.9)},
    "causal-lm": {("transformers", "float32"): (3.8, 1.0),
                  ("transformers", "bfloat16"): (3.9, 2.0),
                  ("vllm", "float32"): (30.7, 1.2),
                  ("vllm", "bfloat16"): (26.7, 2.3)},
}

# The backend of each kind of model without vLLM.
OWN_BACKEND = {"causal-lm": "transformers", "sentence-transformers": "sentence-transformers"}


@dataclass(frozen=True)
class Choice:
    """A backend and the dtype it computes in, and why they were chosen."""

    backend: str
    dtype: str
    reason: str

    def describe(self):
        return f"{self.backend} ({self.dtype})"


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags as the kernel lists them (empty where there is no such file)."""
    with contextlib.suppress(OSError), open(cpuinfo) as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return set(value.split())
    return set()


def native_bfloat16(flags=None):
    """Whether the CPU computes bfloat16 products natively (AVX512_BF16 or AMX on x86, BF16 on
    Arm); elsewhere bfloat16 is emulated, slower than float32."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def fastest_dtype(device, flags=None):
    """``auto``'s dtype: bfloat16 on a CPU that computes it natively (its vectors are within
    cosine 0.999 of float32's, docs/embedding.md), float32 on other CPUs; on a GPU ``auto``,
    the backend's own choice (the model's dtype; vLLM computes float32 models in float16)."""
    if device == "cpu":
        return "bfloat16" if native_bfloat16(flags) else "float32"
    return "auto"


def vllm_refusal(kind, model_path, device):
    """Why vLLM cannot embed this model here (``InputError``), or None."""
    try:
        check_backend("vllm", kind, model_path, device)
    except InputError as refusal:
        return refusal
    return None


def fastest_backend(kind, model_path, device, dtype):
    """``auto``'s backend and why: vLLM where it can embed this model here and ran fastest
    (on a CPU: the table, by speed once running; vLLM's ~25 s start-up is not counted, so that
    a resumed run chooses alike), else the model's own backend."""
    own = OWN_BACKEND[kind]
    if device != "cpu":
        if kind == "causal-lm" and vllm_refusal(kind, model_path, device) is None:
            return "vllm", "vLLM for a causal LM on a GPU, as the paper embeds"
        return own, "on a GPU"
    rates = MEASURED_CPU[kind]
    if ("vllm", dtype) not in rates or (own, dtype) not in rates:
        return own, "the model's own backend"  # a dtype not measured (float16)
    if rates[("vllm", dtype)][1] > rates[(own, dtype)][1] and \
            vllm_refusal(kind, model_path, device) is None:
        return "vllm", f"the fastest measured on a CPU in {dtype}"
    return own, f"the fastest measured on a CPU in {dtype} without vLLM"


def check_backend(backend, kind, model_path, device):
    """Refuse a backend that cannot embed this model here, naming one that can."""
    if backend == "vllm":
        if kind == "other":
            raise InputError(f"{setting('backend', 'vllm')}: {model_path} is neither a causal "
                             f"LM nor a sentence-transformers folder; give a model folder "
                             f"of either kind")
        if kind == "sentence-transformers" and not normalises(model_path):
            raise InputError(f"{setting('backend', 'vllm')}: vLLM scales every embedding to "
                             f"unit length and {model_path} does not (no Normalize module), "
                             f"so the vectors would differ; use "
                             f"{setting('backend', 'sentence-transformers')}")
        check_vllm_can_embed(model_path, device, OWN_BACKEND[kind])
    if backend == "transformers" and kind != "causal-lm":
        if kind == "sentence-transformers":
            raise InputError(f"{setting('backend', 'transformers')}: {model_path} is a "
                             f"sentence-transformers model; use "
                             f"{setting('backend', 'sentence-transformers')} (or auto)")
        raise InputError(f"{setting('backend', 'transformers')}: {model_path} is not a causal "
                         f"LM (its config.json lists no *ForCausalLM architecture)")
    if backend == "sentence-transformers" and kind != "sentence-transformers":
        raise InputError(f"{setting('backend', 'sentence-transformers')}: {model_path} is not "
                         f"a sentence-transformers folder (no modules.json); use "
                         f"{setting('backend', 'transformers')} (or auto)")


def choose(backend, dtype, model_path, device, max_length=None):
    """The backend and dtype that will embed, checked, before any model loads."""
    kind = model_kind(model_path)
    if backend == "auto" and kind == "other":
        backend = "transformers"  # refused below, with the reason
    chosen_dtype = fastest_dtype(device) if dtype == "auto" else dtype
    if backend == "auto":
        backend, reason = fastest_backend(kind, model_path, device, chosen_dtype)
    else:
        reason = "as asked"
    check_backend(backend, kind, model_path, device)
    if max_length is not None:
        check_max_length(max_length, model_path, for_vllm=backend == "vllm")
    if dtype == "auto" and device == "cpu":
        reason += ("; bfloat16 computed natively by this CPU" if chosen_dtype == "bfloat16"
                   else "; float32: this CPU has no native bfloat16")
    return Choice(backend, chosen_dtype, reason)


def may_use_vllm(backend, dtype, model_path, gpu_present):
    """Whether ``backend`` will be vLLM once the device is known: the ranks then meet without
    a process group, and the GPU is chosen through ``CUDA_VISIBLE_DEVICES`` before CUDA
    starts."""
    if backend != "auto":
        return backend == "vllm"
    kind = model_kind(model_path)
    device = "cuda:0" if gpu_present else "cpu"
    if kind == "other" or vllm_build(device) is None:
        return False
    chosen_dtype = fastest_dtype(device) if dtype == "auto" else dtype
    return fastest_backend(kind, model_path, device, chosen_dtype)[0] == "vllm"
