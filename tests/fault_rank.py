"""Run a script as torchrun's rank, with rank 1's kNN search failing as it does when memory
runs out (a RuntimeError from a native library), for the tests of a failure that is not bad
input (``FAULT_MESSAGE`` sets the error's text). The CPU's search is ``gemm_search.GemmSearch`` (utils/density/flat_index.py)."""

import os
import runpy
import sys

sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # as if run as the script

if os.environ.get("RANK") == "1":
    from utils.density.gemm_search import GemmSearch

    def out_of_memory(*_args, **_kwargs):
        raise RuntimeError(os.environ.get(
            "FAULT_MESSAGE", "Error in the kNN search: failed to allocate 8 GB (simulated)"))

    GemmSearch.search = out_of_memory

runpy.run_path(sys.argv[0], run_name="__main__")
