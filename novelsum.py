#!/usr/bin/env python3
"""NovelSum: the diversity of one or more embedded datasets, over a grid of parameters.

The command is ``utils/cli/novelsum.py``; installed, the same command is ``novelsum``."""

from utils.cli.novelsum import main

if __name__ == "__main__":
    main()
