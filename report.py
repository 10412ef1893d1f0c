#!/usr/bin/env python3
"""The HTML report of a finished novelselect or novelsum run, drawn from its outputs.

The command is ``utils/cli/report.py``; installed, the same command is ``novelsum-report``."""

from utils.cli.report import main

if __name__ == "__main__":
    main()
