"""The density factor: distinct rows, flat indexes, the certified exact kNN, sharded references."""
