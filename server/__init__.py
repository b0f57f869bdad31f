"""The consortium side: the Flower ServerApp (strategy, rounds, checkpoints)."""
