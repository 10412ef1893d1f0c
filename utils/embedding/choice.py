"""Which backend and dtype embed a model: what the options ask for, checked before any model
loads, and for ``auto`` the fastest choice measured (benchmarks/embedding_cpu.py, whose table
is in docs/benchmarks.md)."""

from dataclasses import dataclass
from ..errors import InputError, setting
from .models import check_max_length, config_dtype, model_kind, normalises
from .vllm_engine import check_vllm_can_embed, vllm_installed

BACKENDS = ("auto", "vllm", "transformers", "sentence-transformers")
DTYPES = ("auto", "float32", "bfloat16", "float16")

# (load or start-up seconds, texts per second once running) on the 744 example texts (mean 68
# tokens) on a 2-core AMD EPYC (Zen 4, AVX-512 with BF16), for all-MiniLM-L6-v2 and for a
# model of Qwen2.5-0.5B's shape (benchmarks/embedding_cpu.py; docs/benchmarks.md). The speeds
# rank the choices; other models and machines scale them alike.
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

# On a GPU nothing was measured here yet: vLLM for causal LMs, as the paper embeds.
GPU_ORDER = {"sentence-transformers": ["sentence-transformers", "vllm"],
             "causal-lm": ["vllm", "transformers"]}


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
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def native_bfloat16(flags=None):
    """Whether the CPU computes bfloat16 products natively (AVX512_BF16 or AMX on x86, BF16 on
    Arm); elsewhere bfloat16 is emulated, slower than float32."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def fastest_dtype(device, model_path, flags=None):
    """``auto``'s dtype: bfloat16 on a CPU that computes it natively (its vectors are within
    cosine 0.999 of float32's, docs/embedding.md), float32 on other CPUs, and the model's own
    dtype on a GPU."""
    if device == "cpu":
        return "bfloat16" if native_bfloat16(flags) else "float32"
    own = config_dtype(model_path)
    return own if own in ("float32", "bfloat16", "float16") else "float32"


def usable_backends(kind):
    """The backends that can embed a model of ``kind`` at all, and vLLM if installed."""
    own = {"causal-lm": "transformers", "sentence-transformers": "sentence-transformers"}
    usable = [own[kind]] if kind in own else []
    if usable and vllm_installed():
        usable.append("vllm")
    return usable


def fastest_backend(kind, device, dtype):
    """``auto``'s backend for a model of ``kind``: the fastest measured with ``dtype`` once
    running (vLLM's engine takes ~25 s to start, which a small job may not win back; the
    choice stays the same whatever the job's size, so that a resumed run chooses alike)."""
    usable = usable_backends(kind)
    if device != "cpu":
        ranked = [name for name in GPU_ORDER[kind] if name in usable]
        return ranked[0], "on a GPU: vLLM for causal LMs, as the paper embeds"
    rates = MEASURED_CPU[kind]
    ranked = sorted(usable, key=lambda name: -rates.get((name, dtype), (0.0, 0.0))[1])
    return ranked[0], f"the fastest measured on a CPU in {dtype}"


def other_backend(kind):
    return {"causal-lm": "transformers"}.get(kind, "sentence-transformers")


def check_backend(backend, kind, model_path, device):
    """Refuse a backend that cannot embed this model here, naming one that can."""
    if backend == "vllm":
        if kind == "other":
            raise InputError(f"{setting('backend', 'vllm')}: {model_path} is neither a causal "
                             f"LM nor a sentence-transformers folder")
        check_vllm_can_embed(model_path, device, other_backend(kind))
        if kind == "sentence-transformers" and not normalises(model_path):
            raise InputError(f"{setting('backend', 'vllm')}: vLLM scales every embedding to "
                             f"unit length and {model_path} does not (no Normalize module), "
                             f"so the vectors would differ; use "
                             f"{setting('backend', 'sentence-transformers')}")
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
    if max_length is not None:
        check_max_length(max_length, model_path)
    chosen_dtype = fastest_dtype(device, model_path) if dtype == "auto" else dtype
    if backend == "auto":
        backend, reason = fastest_backend(kind, device, chosen_dtype)
    else:
        reason = "as asked"
    check_backend(backend, kind, model_path, device)
    if dtype == "auto":
        reason += f"; {chosen_dtype} " + ("computed natively by this CPU" if chosen_dtype ==
                                          "bfloat16" and device == "cpu" else "chosen here")
    return Choice(backend, chosen_dtype, reason)


def may_use_vllm(backend, dtype, model_path, gpu_present):
    """Whether ``backend`` will be vLLM once the device is known: the ranks then meet without
    a process group, and the GPU is chosen through ``CUDA_VISIBLE_DEVICES`` before CUDA
    starts."""
    if backend != "auto":
        return backend == "vllm"
    kind = model_kind(model_path)
    if kind == "other" or not vllm_installed():
        return False
    device = "cuda:0" if gpu_present else "cpu"
    chosen_dtype = fastest_dtype(device, model_path) if dtype == "auto" else dtype
    return fastest_backend(kind, device, chosen_dtype)[0] == "vllm"
