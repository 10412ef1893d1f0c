"""Numerics, the bottom floor: fixed-order sums, row blocks from a memory budget, proximity
weights, unit rows, k-means. Imports nothing of ours but errors."""
