"""quickstart-feddetox: a Flower app fine-tuning LoRA adapters with DPO, made safe by fedsafe."""
