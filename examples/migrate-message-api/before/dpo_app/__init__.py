"""A plain Flower app: federated DPO on the LoRA adapter of a small LM."""
