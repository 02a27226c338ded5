"""The training engine: one loop for every kind of training (LoRA CPT/SFT and the CLaRa stages)."""
