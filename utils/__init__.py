"""Shared building blocks of novelsum.py, novelselect.py and embedding.py.

Modules, in the order the method uses them (sections of docs/method.md in brackets):

- ``shards``: read shard folders into one array with global row indices (1).
- ``device``: resolve ``--gpu_id`` to a torch device string once, at the edge.
- ``density``: exact k-nearest-neighbour search and the density factor (3).
- ``proximity``: rank weights, proximity-weighted means and the NovelSum grid (4).
- ``selection``: the incremental NovelSelect engine (5).
- ``embedders``: text extraction and embedding backends (2).
- ``distributed``: ranks under ``torchrun``: row blocks, collectives, agreed failures.
- ``sharded``: the kNN search and the NovelSelect engine split over ranks (9).
- ``atomic``: outputs written under a temporary name, then renamed.
- ``blocks``: row blocks sized from a memory budget (the one chunk planner).
- ``progress``: optional progress reporting around an iterable.

No module here imports click; heavy libraries (torch, vLLM, transformers) are imported where
they are used, so the CPU path and ``--help`` stay fast.
"""
