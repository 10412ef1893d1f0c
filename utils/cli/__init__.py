"""The three commands: their click options, checks of option combinations, one error
translation."""
