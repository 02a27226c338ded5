"""Base models: building tiny ones from scratch, registering, quantizing and benchmarking."""

from clara.models import register as _register  # noqa: E402,F401  (mlx-lm finds clara's model types)
