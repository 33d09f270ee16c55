"""A plain Flower NumPyClient app: federated DPO on the LoRA adapter of a small LM."""
