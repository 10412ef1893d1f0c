"""What each command does, from its options to its files: load, compute, write, report."""
