"""clara: train and study small language models on your own documents with MLX.

The library under both faces of the product: the `clara` click commands (`clara.cli`) and the
Textual app (`tui/`). This package never imports Textual.
"""

__version__ = "0.1.0"
