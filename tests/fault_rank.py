"""Run a script as torchrun's rank, with rank 1's faiss failing as it does when memory runs out
(a RuntimeError from its C++ side), for the tests of a failure that is not bad input."""

import os
import runpy
import sys

if os.environ.get("RANK") == "1":
    import faiss

    def out_of_memory(*_args, **_kwargs):
        raise RuntimeError("Error in faiss::IndexFlat: failed to allocate 8 GB (simulated)")

    faiss.IndexFlatL2 = out_of_memory

sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # as if run as the script
runpy.run_path(sys.argv[0], run_name="__main__")
