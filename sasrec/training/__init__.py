"""Training of the sequential models: configuration, sequences, negatives, losses, the loop, checkpoints."""
