"""HRM (Hierarchical Reasoning Model) and TRM on MLX: puzzle datasets, model, training task,
evaluation and step-by-step solving. See clara/hrm/model.py for the method."""
