"""What each command does, in named steps: run_novelsum, run_novelselect, run_embedding."""
