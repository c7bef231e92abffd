"""Pure loss functions, one file per family: (params, batch, rng, model) -> (loss_sum, metrics)."""
