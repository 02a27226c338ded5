"""NAVER's HyperCLOVA X (SEED) text model for mlx-lm, written after transformers'
`models/hyperclovax` (the reference this module is tested against for parity).

A Llama/Granite decoder with muP multipliers and Peri-LN:
- `embedding_multiplier` scales the input embeddings (also embeddings passed in directly, as
  transformers does with `inputs_embeds`),
- `attention_multiplier` replaces `1/sqrt(head_dim)` as the attention scale (default: that value),
- `residual_multiplier` scales each sub-layer output before the residual add,
- `use_post_norm` (default True) adds an RMSNorm (`post_norm1`, `post_norm2`) on each sub-layer
  output before that add,
- `logits_scaling` **multiplies** the logits (Granite divides).

mlx-lm has no such model type; `register()` (run by `import clara.models`) makes
`mlx_lm.load` find this module as `mlx_lm.models.hyperclovax`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.activations import swiglu
from mlx_lm.models.base import BaseModelArgs, create_attention_mask, scaled_dot_product_attention
from mlx_lm.models.cache import KVCache
from mlx_lm.models.rope_utils import initialize_rope

MODEL_TYPE = "hyperclovax"


@dataclass
class ModelArgs(BaseModelArgs):
    # Defaults are transformers' HyperCLOVAXConfig defaults, so a sparse config.json means the same
    # model in both libraries (`from_dict` drops keys this class does not name).
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    rms_norm_eps: float = 1e-6
    num_key_value_heads: Optional[int] = None
    head_dim: Optional[int] = None
    max_position_embeddings: Optional[int] = 2048
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    rope_theta: float = 10000.0
    rope_traditional: bool = False
    rope_scaling: Optional[Dict[str, Union[float, str]]] = None
    rope_parameters: Optional[Dict[str, Any]] = None
    tie_word_embeddings: bool = False
    embedding_multiplier: float = 1.0
    attention_multiplier: Optional[float] = None
    residual_multiplier: float = 1.0
    logits_scaling: float = 1.0
    use_post_norm: bool = True

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.attention_multiplier is None:
            self.attention_multiplier = self.head_dim**-0.5
        # transformers 5 writes `rope_parameters` ({"rope_type", "rope_theta", ...}); older configs
        # write `rope_theta` and `rope_scaling`.
        if self.rope_parameters:
            self.rope_theta = self.rope_parameters.get("rope_theta", self.rope_theta)
            if self.rope_parameters.get("rope_type", "default") != "default":
                self.rope_scaling = dict(self.rope_parameters)
        if self.hidden_act != "silu":
            raise ValueError(f"hyperclovax: hidden_act {self.hidden_act!r} is not supported (silu only)")


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        dim = args.hidden_size
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        self.scale = args.attention_multiplier
        bias = args.attention_bias
        self.q_proj = nn.Linear(dim, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, dim, bias=bias)
        self.rope = initialize_rope(self.head_dim, args.rope_theta, args.rope_traditional,
                                    args.rope_scaling, args.max_position_embeddings)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        B, L, _ = x.shape
        q = self.q_proj(x).reshape(B, L, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        offset = cache.offset if cache is not None else 0
        q = self.rope(q, offset=offset)
        k = self.rope(k, offset=offset)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out = scaled_dot_product_attention(q, k, v, cache=cache, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        dim, hidden, bias = args.hidden_size, args.intermediate_size, args.mlp_bias
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = MLP(args)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.use_post_norm = args.use_post_norm
        if args.use_post_norm:
            self.post_norm1 = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
            self.post_norm2 = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.residual_multiplier = args.residual_multiplier

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        r = self.self_attn(self.input_layernorm(x), mask, cache)
        if self.use_post_norm:
            r = self.post_norm1(r)
        h = x + r * self.residual_multiplier
        r = self.mlp(self.post_attention_layernorm(h))
        if self.use_post_norm:
            r = self.post_norm2(r)
        return h + r * self.residual_multiplier


class HyperCLOVAXModel(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.vocab_size = args.vocab_size
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [TransformerBlock(args) for _ in range(args.num_hidden_layers)]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.embedding_multiplier = args.embedding_multiplier

    def __call__(self, inputs: mx.array, cache=None,
                 input_embeddings: Optional[mx.array] = None) -> mx.array:
        h = input_embeddings if input_embeddings is not None else self.embed_tokens(inputs)
        h = h * self.embedding_multiplier
        if cache is None:
            cache = [None] * len(self.layers)
        mask = create_attention_mask(h, cache[0])
        for layer, c in zip(self.layers, cache):
            h = layer(h, mask, cache=c)
        return self.norm(h)


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.model = HyperCLOVAXModel(args)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    def __call__(self, inputs: mx.array, cache=None,
                 input_embeddings: Optional[mx.array] = None) -> mx.array:
        h = self.model(inputs, cache, input_embeddings)
        if self.args.tie_word_embeddings:
            logits = self.model.embed_tokens.as_linear(h)
        else:
            logits = self.lm_head(h)
        return logits * self.args.logits_scaling

    def sanitize(self, weights: dict) -> dict:
        weights = {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}
        if self.args.tie_word_embeddings:
            weights.pop("lm_head.weight", None)
        return weights

    @property
    def layers(self):
        return self.model.layers

    def make_cache(self):
        return [KVCache() for _ in self.layers]


def register() -> None:
    """Make `mlx_lm.load` accept `model_type: hyperclovax` (mlx-lm imports
    `mlx_lm.models.<model_type>`, so a module placed under that name in `sys.modules` is found)."""
    import mlx_lm.models

    name = f"mlx_lm.models.{MODEL_TYPE}"
    module = sys.modules[__name__]
    if sys.modules.get(name) is not module:
        sys.modules[name] = module
        setattr(mlx_lm.models, MODEL_TYPE, module)
