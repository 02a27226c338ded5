"""CLaRa on MLX: document compression into memory-token states, three LoRA adapters on one frozen
base (compressor, generator, query reasoner), the three training stages, and inference.

The method follows the public reference described in docs/clara-method.md; module map:
config (ClaraConfig), tokens (special tokens), embeddings (float memory rows), adapters
(multi-adapter LoRA), prompts (templates), topk (straight-through top-k), losses, model
(ClaraModel), checkpoint, inference (compressed store, answering), tasks (training stages).
"""

from clara.method.config import ClaraConfig

__all__ = ["ClaraConfig"]
