"""Where the work runs: the device from --gpu_id, ranks under torchrun, progress."""
