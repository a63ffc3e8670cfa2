"""`attnreuse train` and `attnreuse convert`: training with distillation and torchrun, retrofit."""
