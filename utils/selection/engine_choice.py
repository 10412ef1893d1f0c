"""The engine for a device: numba or numpy on the CPU, Triton or torch on a GPU."""

import os

from .cpu import NumpyEngine
from .gpu import GPU_KERNEL_VARIABLE, TorchEngine, TritonEngine, triton_self_check
from .memory import TORCH_BLOCK_MIB


def make_engine(unit, density_factors, k, alpha, device, notify=None, block_mib=TORCH_BLOCK_MIB):
    """The engine for ``device``: on the CPU, numba kernels or (small selections) numpy ones;
    on a GPU the Triton kernel when Triton is installed and passes its self-check there, else
    the torch kernel (``notify`` hears why).
    ``block_mib``: working memory of one row chunk of the GPU engines, and of one row block
    of a rebuild (``SelectionEngine.rebuild``) on every engine."""
    if device == "cpu":
        return NumpyEngine(unit, density_factors, k, alpha, block_mib)
    import importlib.util

    if os.environ.get(GPU_KERNEL_VARIABLE) == "torch":
        problem = f"{GPU_KERNEL_VARIABLE}=torch"
    elif importlib.util.find_spec("triton") is None:
        problem = "Triton is not installed"
    else:
        problem = triton_self_check(device)
    if problem is None:
        return TritonEngine(unit, density_factors, k, alpha, device, block_mib=block_mib)
    if notify is not None:
        notify(f"the fused Triton kernel is not used ({problem}); using the slower torch kernel")
    return TorchEngine(unit, density_factors, k, alpha, device, block_mib)


def check_engine(engine, n, k, alpha):
    """Refuse an engine built for another pool size, pick count k or alpha than the selection
    asks."""
    built, asked = (engine.n, engine.k, engine.alpha), (n, k, float(alpha))
    if built != asked:
        raise ValueError("the engine was built for n={}, k={}, alpha={} but the selection asks "
                         "for n={}, k={}, alpha={}".format(*built, *asked))


def select(unit, density_factors, k, alpha, first, quality=None, engine=None, device="cpu",
           on_pick=None, given=None):
    """Greedy NovelSelect: ``k`` global indices in pick order, starting from ``first``: the
    first pick, or a list of distinct picks to continue from (``SelectionEngine.run``).

    ``unit``: (n, d) float32 unit rows; ``density_factors``: (n,) float32 sigma^beta;
    ``quality``: optional (n,) non-negative scores multiplied into the novelty.
    Ties go to the lowest index. ``on_pick(index, novelty)`` is called after each pick.
    ``given``: the unit vectors and density factors of a set the user already has, whose rows
    count as picks made before ``first`` (docs/method.md section 10).
    An ``engine`` given must have been built for the same rows, the picks (with the given
    set's rows) and ``alpha``.
    """
    total = k + (0 if given is None else len(given[0]))
    if engine is None:
        engine = make_engine(unit, density_factors, total, alpha, device)
    check_engine(engine, len(unit), total, alpha)
    return engine.run(first, quality, on_pick, given)
