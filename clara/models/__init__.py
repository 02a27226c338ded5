"""Base models: building tiny ones from scratch, registering, quantizing and benchmarking."""
