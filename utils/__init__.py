"""Shared building blocks of novelsum.py, novelselect.py and embedding.py.

Modules, in the order the method uses them:

- ``shards``: read shard folders (SPEC section 1) into one array with global row indices.
- ``device``: resolve ``--gpu_id`` to a torch device string once, at the edge.
- ``density``: exact k-nearest-neighbour search and the density factor (SPEC section 3).
- ``proximity``: rank weights, proximity-weighted means and the NovelSum grid (SPEC section 4).
- ``selection``: the incremental NovelSelect engine (SPEC section 5).
- ``embedders``: text extraction and embedding backends (SPEC section 2).
- ``atomic``: outputs written under a temporary name, then renamed.

No module here imports click; heavy libraries (torch, vLLM, transformers) are imported where
they are used, so the CPU path and ``--help`` stay fast.
"""
