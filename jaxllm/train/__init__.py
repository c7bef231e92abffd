"""Training: the train state, the compiled step, the one loop, optimizers, checkpoints, metrics."""
