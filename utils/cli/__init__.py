"""The three commands: their click options, checks of option combinations, one error
translation."""

import os

# The commands own their process. OpenBLAS's workers spin for about 0.1 s after each matrix
# product before they sleep, and the numba kernels that follow each product of the kNN search
# then run at a third of their speed on two cores (docs/benchmarks.md). Sleeping at once costs a
# wake-up of microseconds a product. Set before numpy loads; a value set already wins. The
# library (``utils.api``) leaves it to its caller.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
