"""PyTorch-level compression: structured pruning and distillation (not yet implemented)."""
