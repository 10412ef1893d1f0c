"""Embedding backends (sentence-transformers, transformers, vLLM) and where their outputs go."""
