#!/usr/bin/env python3
"""Embed text shards: one vector per item, one output shard per input shard.

The command is ``utils/cli/embed.py``; installed, the same command is ``novelsum-embed``."""

from utils.cli.embed import main

if __name__ == "__main__":
    main()
