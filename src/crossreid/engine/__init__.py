"""Training engine: trainer, checkpoints, logging."""
