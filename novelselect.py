#!/usr/bin/env python3
"""NovelSelect: pick the subset of a pool with the highest NovelSum, greedily.

The command is ``utils/cli/novelselect.py``; installed, the same command is ``novelselect``."""

from utils.cli.novelselect import main

if __name__ == "__main__":
    main()
