"""Base models: building tiny ones from scratch, registering, quantizing and benchmarking."""

from clara.models import architectures as _architectures  # noqa: E402,F401  (mlx-lm finds clara's model types)
