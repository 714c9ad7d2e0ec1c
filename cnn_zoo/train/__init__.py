"""Training: the immutable state, one train and one eval step, optimizers, the loop and its outputs."""
