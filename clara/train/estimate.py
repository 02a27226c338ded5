"""Pre-flight estimate of a training run's peak memory and time per step, from the model's
config.json alone (no weights are loaded), the dtype or quantization, the LoRA settings, the
batch and the lengths, and for CLaRa the compression geometry.

The peak is the sum of what a training step holds at the end of its forward pass, when the
backward pass starts:
    weights      every frozen weight in its dtype (quantized: bits/8 plus a scale and a bias in
                 the model's dtype per group)
    trainables   LoRA A and B (and CLaRa's memory rows) in float32, with their gradient and
                 AdamW's two moments: 16 bytes per trained parameter
    activations  per block and token what the backward pass reads (norm inputs, projections,
                 the MLP's gate/up/product, attention inputs and outputs), in the model's
                 dtype, plus the attention probabilities where attention is not fused; with
                 grad_checkpoint only each block's input is kept, and one block is recomputed
    logits       the supervised positions' logits in the dtype, their float32 copy for the loss,
                 and the gradient of both
The per-token coefficients were fitted to `mx.get_peak_memory()` of real steps on the CPU
(tests/test_memory.py checks them there within 15 %).

On CUDA (an H200; compiled steps, MLX's look-ahead engine) the peak is not that sum. Measured
at 1.1B, stage 1 grows ~1.2 GB a row from b8 to b32 over a part of ~11 GB that does not grow
with the batch, so one factor on the activations (the old CUDA_ACTIVATION_FACTOR, 1.8) is right
at one batch only. The CUDA peak is instead (cuda_terms; CUDA_* constants, least squares):
    weights + trainables                     as above
    activations  1.02 x what the backward keeps, per row and token and per layer; with
                 grad_checkpoint + 0.60 x what checkpointing does not keep (the recomputed
                 blocks' transients: checkpointing saves 4 of 9 GB at 1.1B, not 8)
    logits       one float32 copy of the logits alive at once (all, or one chunked-CE chunk):
                 the largest single transient of the backward
    step buffers 2.32 GB fixed (the compiled step's and the allocator's buffers), plus 2.58 x
                 the block weights per pass (encoder, decoder) for a model not quantized
The last term is fitted, not explained: at 1.1B bf16 the part that does not grow with the batch
is ~11 GB for stage 1's two passes and ~8.5 GB for LoRA's one, at 8B 4-bit ~2-3 GB; only one
model of each kind was measured, so "not quantized" and "smaller" are not told apart. Whatever
holds it (the step queued ahead by the look-ahead, which MLX allocates when queued; weight-shaped
buffers of the compiled backward) was not measured one by one. Under MLX's memory limit the peak
is the limit or the step's floor (HOLD_OVER).

Every H200 peak measured (bench/clara_throughput.py's tables, sessions 5-8; 1.1B is its `1b`
preset, 8B-q4 its `8b-q4`; enc/dec the encoder/decoder widths, or LoRA's row length; old est
the factor model this replaced; held out: the point predicted by the fit to the others, run
in tests/test_estimate.py; +limX: MLX's limit at X GB):

    model  work                    rows   enc/dec  measured  old est  new est  error  held out
    1.1B   stage1                  b8     288/448     21.85    20.91    21.13    -3 %      -4 %  s5
    1.1B   stage1+chunk            b8     288/448     22.03    19.77    20.94    -5 %      -6 %  s5
    1.1B   stage1+chunk+ckpt       b8     288/448     17.84    14.33    17.54    -2 %      -9 %  s5
    1.1B   stage1                  b8     320/448     21.98    21.62    21.54    -2 %      -3 %  s8
    1.1B   stage1                  b16    320/448     31.50    41.40    31.65    +0 %      +0 %  s8
    1.1B   stage1                  b32    320/448     51.39    80.97    51.87    +1 %      +2 %  s8
    1.1B   stage1+drop0            b8     320/448     20.47    21.62    21.54    +5 %      +6 %  s8
    1.1B   lora                    b8         513     10.65     9.57    14.60   +37 %     +44 %  s6
    1.1B   lora                    b16        513     23.20    17.45    21.56    -7 %      -8 %  s8
    1.1B   lora                    b32        513     35.28    33.21    35.48    +1 %      +0 %  s8
    8B-q4  stage1+chunk            b1     288/432     15.21    16.36    13.60   -11 %     -18 %  s5
    8B-q4  stage1+chunk+ckpt       b1     288/432     11.16    13.31    11.61    +4 %      +9 %  s5
    1.1B   stage1+lim10            b8     288/448     11.86    14.75    11.89    +0 %            s6
    1.1B   stage1+chunk+ckpt+lim6  b8     288/448      8.44     6.36     8.18    -3 %            s6
    1.1B   lora+lim10              b8         513      9.89     9.57    10.60    +7 %            s7
    1.1B   stage1+chunk+ckpt+lim8  b8     288/448      8.43     8.48     8.48    +1 %            s7
    1.1B   stage1+chunk+lim8       b8     288/448     12.13    13.51    11.69    -4 %            s7
    1.1B   stage1+ckpt+lim8        b8     288/448      8.43     8.48     8.48    +1 %            s7
    1.1B   stage1+chunk+ckpt+lim8  b8     320/448      8.58     8.48     8.48    -1 %            s7
    1.1B   stage1+chunk+lim8       b8     320/448     12.79    13.94    12.11    -5 %            s7
    1.1B   stage1+ckpt+lim10       b8     320/448     10.43    10.60    10.60    +2 %            s7
    8B-q4  stage1+chunk+ckpt+lim8  b1     288/432      8.82     8.48     9.56    +8 %            s6

Repeats of a row, not fitted again: stage1 b8 288/448 21.85 in s6 and s7; 320/448 22.11 and
22.19 (s7), 22.08 (s8, labels trimmed); +chunk+ckpt 17.84 twice; 8B +chunk+ckpt 11.16 twice;
lora+lim10 9.93 (s6); and stage1+drop0 320/448 at 16.09 in s7 against 20.47 in s8 (+34 % for
that run): the same shape's peak moves by a quarter between runs with how far the host got
ahead of the device. Not in the table: runs without the look-ahead (+seq: stage1 21.85, lora
13.60; CLARA_STEP_AHEAD=0 is a bench switch, not a setting), mlx-lm's own trainer, and the
runs of code before session 5's memory fixes (bench/results-h200-1b-before-padding.json).

Outside 15 %: LoRA at b8 (+37 %, over: the safe side). Its part that does not grow with the
batch is ~2.7 GB against ~8.5 GB at b16 and b32: at b8 LoRA's step is host-bound (host 48 ms a
step against the device's 45 ms), so no step waits queued ahead of the device, and the estimate
cannot know that before the run. It is bounded instead: every estimate on CUDA also gives its
low end, the peak of a step that nothing waits queued behind (Estimate.low_bytes: the peak less
the step buffers' per-pass part), and `line()` prints it: for LoRA at b8 10.97 GB (-3 %), and
every measured peak of the table lies between 0.85 x the low end and 1.15 x the peak
(tests/test_estimate.py). The held-out fit is within 20 % elsewhere (8B-q4 stage1+chunk
-18 %: the one point of its kind without checkpointing). Eager (uncompiled) CUDA steps were not
measured; the same formula is used for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from clara.errors import UserError

GB = 1e9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ALL_KEYS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# Saved activations per block and token, in elements of the model's dtype: multiples of the
# hidden size, of the MLP width and of the key/value width (fitted, see the module doc).
ACT_H, ACT_I, ACT_KV = 12.0, 4.0, 4.0
PROMPT_TOKENS = 96  # a CLaRa decoder prompt's instruction and chat template, without the slots
# Sustained training rate (FLOP/s) per backend, for the time estimate only.
RATES = {"cuda": 200e12, "metal": 8e12, "gpu": 8e12, "cpu": 5e10}
# Fused attention keeps no L x L probabilities (CUDA: cuDNN; Metal: MLX's kernels)
FUSED_ATTENTION = {"cuda": True, "metal": False, "gpu": False, "cpu": False}
# On CUDA (compiled steps, no MLX limit) a step's peak beyond the weights and the trainables,
# fitted to the H200 table of the module doc (tests/test_estimate.py refits them there):
CUDA_KEPT = 1.02  # x what the backward keeps (activation_bytes)
CUDA_RECOMPUTE = 0.60  # x what gradient checkpointing drops: the recomputed blocks' transients
CUDA_PASS_WEIGHTS = 2.58  # x the block weights of a model not quantized, per pass (see the doc)
CUDA_FIXED = 2.32e9  # the compiled step's and the allocator's fixed buffers
# Under MLX's memory limit (the engine's hold, clara/train/engine.py) the host waits for the
# device once the limit is reached: the step's peak is then about the limit, or what the step
# cannot do without (weights, trainables, the activations the backward keeps and the logits;
# on CUDA the CUDA peak less its step buffers) when that is more. Fitted to the H200 (the
# module doc's +limX rows): 1.06 x the limit, 1.03 x the CUDA floor (FLOOR_OVER: the CPU's).
HOLD_OVER, FLOOR_OVER = 1.06, 1.08
CUDA_FLOOR_OVER = 1.03


@dataclass
class Shape:
    """What the estimate reads of a model's config.json."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool = True
    head_dim: int | None = None
    bits: int = 0  # 0: not quantized
    group_size: int = 64

    @classmethod
    def from_config(cls, cfg: dict) -> "Shape":
        text = cfg.get("text_config") or {}
        c = {**text, **{k: v for k, v in cfg.items() if k != "text_config"}} if text else cfg
        try:
            h, L = int(c["hidden_size"]), int(c["num_hidden_layers"])
            heads = int(c["num_attention_heads"])
            inter = int(c.get("intermediate_size") or 4 * h)
            vocab = int(c["vocab_size"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"config.json: cannot read the model's shape ({e})") from None
        q = c.get("quantization") or c.get("quantization_config") or {}
        return cls(hidden=h, layers=L, heads=heads,
                   kv_heads=int(c.get("num_key_value_heads") or heads), intermediate=inter,
                   vocab=vocab, tied=bool(c.get("tie_word_embeddings", True)),
                   head_dim=c.get("head_dim"), bits=int(q.get("bits") or 0),
                   group_size=int(q.get("group_size") or 64))

    @property
    def hd(self) -> int:
        return int(self.head_dim or self.hidden // self.heads)

    def proj_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection of a block."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.hd, self.kv_heads * self.hd
        return {"self_attn.q_proj": (h, q), "self_attn.k_proj": (h, kv),
                "self_attn.v_proj": (h, kv), "self_attn.o_proj": (q, h),
                "mlp.gate_proj": (h, i), "mlp.up_proj": (h, i), "mlp.down_proj": (i, h)}

    def block_params(self) -> int:
        return sum(a * b for a, b in self.proj_dims().values())

    def forward_params(self) -> int:
        """Parameters a token goes through: the blocks and the output head."""
        return self.layers * self.block_params() + self.vocab * self.hidden


@dataclass
class Work:
    """One training step's shape: which task, what is trained, and the token counts."""

    kind: str  # lora | stage1 | stage2 | stage3
    batch_size: int
    seq_len: int = 0  # LoRA: padded row length
    supervised_len: int | None = None  # positions whose logits the loss reads (default seq_len)
    enc_len: int = 0  # CLaRa: encoder row length (<ENC> BOS doc EOS mems)
    enc_rows: int = 0  # CLaRa: encoder rows per step (documents, and queries in stage 3)
    dec_len: int = 0  # CLaRa: decoder row length
    lora_rank: int = 8
    lora_keys: tuple[str, ...] = ALL_KEYS
    lora_layers: int = -1
    adapters_trained: int = 1
    adapters_held: int = 1
    extra_trainable: int = 0  # e.g. CLaRa's memory rows
    lora_dropout: float = 0.0  # > 0 keeps each adapted input's dropout mask (and, LoRA, copy)
    grad_checkpoint: bool = False
    chunked_ce: bool = False  # CLaRa's chunked_ce: one chunk of logits at a time
    compiled: bool = True  # the engine's mx.compile'd step (eager CUDA steps: not measured)
    dtype: str = "bfloat16"
    full: bool = False  # full fine-tuning of the adapted layers
    mlx_limit_bytes: int = 0  # MLX's memory limit the engine sets (0: none)


@dataclass
class Estimate:
    peak_bytes: int
    parts: dict = field(default_factory=dict)
    step_seconds: float = 0.0
    tokens_per_step: int = 0
    budget_bytes: int = 0
    budget_what: str = ""
    # the peak when the host, not the device, bounds the step and nothing waits queued ahead
    # (CUDA: the step buffers' per-pass part is then absent; see the module doc); 0: the same
    low_bytes: int = 0

    @property
    def over_budget(self) -> bool:
        return bool(self.budget_bytes) and self.peak_bytes > 0.9 * self.budget_bytes

    def line(self) -> str:
        """One line for a form or a terminal."""
        parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in self.parts.items())
        s = f"estimated peak {self.peak_bytes / GB:.2f} GB ({parts}"
        if self.low_bytes and self.low_bytes < self.peak_bytes:
            s += (f"; {self.low_bytes / GB:.2f} GB if the host, not the device, bounds the step: "
                  "nothing then waits queued ahead")
        s += f"), ~{self.step_seconds:.2g} s/step"
        if self.budget_bytes:
            s += f"; budget {self.budget_bytes / GB:.1f} GB ({self.budget_what})"
        if self.over_budget:
            s += (" — OVER 90% OF THE BUDGET: lower batch_size or lengths, or --grad-checkpoint "
                  "(CLaRa: and --chunked-ce), or --memory-limit-gb (MLX then holds the step "
                  "under it, more slowly)")
        return s

    def form_line(self) -> str:
        """The Train form's short line: the peak, and on CUDA the low end as `line` prints it
        (a host-bound step, nothing queued ahead), then the time per step."""
        low = (f" ({self.low_bytes / GB:.1f} GB if the host bounds the step)"
               if 0 < self.low_bytes < self.peak_bytes else "")
        over = f"  — over 90% of {self.budget_what}" if self.over_budget else ""
        return (f"estimate: peak {self.peak_bytes / GB:.1f} GB{low}, "
                f"~{self.step_seconds:.2g} s/step{over}")

    def to_dict(self) -> dict:
        return {"peak_gb": self.peak_bytes / GB, "low_gb": (self.low_bytes or self.peak_bytes) / GB,
                "parts_gb": {k: v / GB for k, v in self.parts.items()},
                "step_seconds": self.step_seconds, "tokens_per_step": self.tokens_per_step,
                "budget_gb": self.budget_bytes / GB, "budget": self.budget_what,
                "over_budget": self.over_budget}


def weight_bytes(s: Shape, dtype_bytes: int) -> int:
    blocks = s.layers * s.block_params()
    table = s.vocab * s.hidden * (1 if s.tied else 2)
    norms = (2 * s.layers + 1) * s.hidden * dtype_bytes
    if s.bits:
        per = s.bits / 8 + 2 * dtype_bytes / s.group_size
        return int((blocks + table) * per) + norms
    return (blocks + table) * dtype_bytes + norms


def trainable_params(s: Shape, w: Work) -> int:
    n_layers = s.layers if w.lora_layers < 0 else min(w.lora_layers, s.layers)
    dims = s.proj_dims()
    if w.full:
        return n_layers * s.block_params()
    per_layer = sum(w.lora_rank * (a + b) for k, (a, b) in dims.items() if k in w.lora_keys)
    return n_layers * per_layer


def activation_bytes(s: Shape, w: Work, rows: int, length: int, backend: str) -> int:
    """What the backward pass of one forward over rows x length keeps."""
    b = DTYPE_BYTES.get(w.dtype, 2)
    kv = s.kv_heads * s.hd
    per_token_layer = (ACT_H * s.hidden + ACT_I * s.intermediate + ACT_KV * kv) * b
    if w.lora_dropout > 0 and not w.full:
        dims = s.proj_dims()
        # CLaRa's adapters keep nothing (clara.method.adapters.dropped_lora draws the mask
        # again); mlx-lm's LoRALinear keeps the dropped copy and the mask
        per_elem = 0 if w.kind != "lora" else b + 1
        per_token_layer += sum(dims[k][0] for k in w.lora_keys if k in dims) * per_elem
    attn = 0 if FUSED_ATTENTION.get(backend, False) else 2 * rows * s.heads * length * length * 4
    tokens = rows * length
    if w.grad_checkpoint:  # block inputs only, plus one block recomputed during backward
        return s.layers * tokens * s.hidden * b + tokens * per_token_layer + attn
    return s.layers * (tokens * per_token_layer + attn)


def logit_count(s: Shape, w: Work, rows: int, positions: int) -> int:
    """Logits alive at once: every supervised position's, or one chunk's (losses.chunked_ce)."""
    n = rows * positions
    if w.chunked_ce and w.kind != "lora":
        from clara.method.config import CE_CHUNK_ELEMENTS

        n = min(n, max(1, CE_CHUNK_ELEMENTS // s.vocab))
    return n * s.vocab


def logits_bytes(s: Shape, w: Work, rows: int, positions: int) -> int:
    b = DTYPE_BYTES.get(w.dtype, 2)
    # the logits, the loss's float32 working copies and the gradients; CLaRa's head splices
    # the added tokens' columns in, one more copy
    per = 2 * b + 8 if w.kind == "lora" else 4 * b + 16
    return logit_count(s, w, rows, positions) * per


def passes(w: Work) -> list[tuple[int, int]]:
    """(rows, length) of each forward pass of a step: LoRA's one; CLaRa's encoder and decoder
    (the encoder's activations stay alive until the decoder's backward reaches them)."""
    if w.kind == "lora":
        return [(w.batch_size, w.seq_len)]
    return [(w.enc_rows, w.enc_len), (w.batch_size, w.dec_len)]


def cuda_terms(s: Shape, w: Work) -> dict:
    """The quantities the CUDA peak is made of (bytes), before their fitted coefficients:
    kept       what the backward keeps (activation_bytes over the step's passes)
    dropped    what gradient checkpointing does not keep (0 without it)
    logits     one float32 copy of the logits alive at once: the largest single transient
    weights    the block weights times the passes, for a model not quantized (0 quantized)"""
    full = Work(**{**w.__dict__, "grad_checkpoint": False})
    kept = sum(activation_bytes(s, w, r, n, "cuda") for r, n in passes(w))
    dropped = sum(activation_bytes(s, full, r, n, "cuda") for r, n in passes(w)) - kept
    rows, length = passes(w)[-1]
    logits = 4 * logit_count(s, w, rows, w.supervised_len or length)
    weights = 0 if s.bits else (s.layers * s.block_params() * DTYPE_BYTES.get(w.dtype, 2)
                                * len(passes(w)))
    return {"kept": kept, "dropped": dropped, "logits": logits, "weights": weights}


def estimate(s: Shape, w: Work, backend: str | None = None) -> Estimate:
    from clara.platform import backend as current_backend, device_memory

    backend = backend or current_backend()
    b = DTYPE_BYTES.get(w.dtype, 2)
    weights = weight_bytes(s, b)
    n_train = trainable_params(s, w) * w.adapters_trained + w.extra_trainable
    n_held = trainable_params(s, w) * max(0, w.adapters_held - w.adapters_trained)
    if w.full:
        trainables = n_train * 4 * b  # weights already counted; grads + moments in the dtype
    else:
        trainables = n_train * 16 + n_held * 4
    rows, length = passes(w)[-1]
    act = sum(activation_bytes(s, w, r, n, backend) for r, n in passes(w))
    logits = logits_bytes(s, w, rows, w.supervised_len or length)
    tokens = sum(r * n for r, n in passes(w))
    kept = act  # what the backward keeps (the floor of a step held by MLX's limit)
    parts = {"weights": weights, "trainables": trainables, "activations": act, "logits": logits}
    if backend == "cuda":  # see CUDA_KEPT and the module doc
        t = cuda_terms(s, w)
        parts.update(activations=int(CUDA_KEPT * t["kept"] + CUDA_RECOMPUTE * t["dropped"]),
                     logits=t["logits"])
        parts["step buffers"] = int(CUDA_PASS_WEIGHTS * t["weights"] + CUDA_FIXED)
    peak = sum(parts.values())
    # a host-bound step (nothing queued ahead of the device) lacks the per-pass buffers
    low = peak - int(CUDA_PASS_WEIGHTS * t["weights"]) if backend == "cuda" else peak
    if w.mlx_limit_bytes:  # held by MLX's limit: see HOLD_OVER
        floor = FLOOR_OVER * (weights + trainables + kept + logits)
        if backend == "cuda":  # what the step cannot do without: no step buffers
            floor = CUDA_FLOOR_OVER * (peak - parts["step buffers"])
        held = max(HOLD_OVER * w.mlx_limit_bytes, floor)
        if held < peak:
            parts["held by the MLX limit"] = int(held - peak)
            peak = held
        low = min(low, peak)
    rate = RATES.get(backend, RATES["cpu"])
    budget, what = device_memory()
    return Estimate(peak_bytes=int(peak), parts=parts,
                    step_seconds=6 * s.forward_params() * tokens / rate,
                    tokens_per_step=int(tokens), budget_bytes=budget, budget_what=what,
                    low_bytes=int(low))


# ------------------------------------------------------------------------------ from runs
def read_model_config(source: str) -> dict:
    """config.json of a local folder or of a Hugging Face id already in the local cache (no
    download, no weights)."""
    path = Path(source).expanduser()
    file = path / "config.json"
    if not file.is_file() and not path.exists():
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(source, "config.json")
            file = Path(hit) if isinstance(hit, str) else file
        except Exception:
            pass
    if not file.is_file():
        raise UserError(f"{source}: no config.json here or in the Hugging Face cache "
                         "(download the model first: clara model add)")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{file}: cannot read: {e}") from None


def _dtype(cfg_dtype: str | None) -> str:
    from clara.platform import default_dtype

    return cfg_dtype or default_dtype()


def lora_work(cfg) -> Work:
    """A LoRA run's step (clara.train.config.TrainConfig): rows padded to max_seq_length."""
    return Work(kind="lora", batch_size=cfg.batch_size, seq_len=cfg.max_seq_length,
                lora_rank=cfg.lora_rank, lora_dropout=cfg.lora_dropout, lora_keys=tuple(cfg.lora_keys or ALL_KEYS),
                lora_layers=cfg.num_layers, grad_checkpoint=cfg.grad_checkpoint,
                dtype=_dtype(getattr(cfg, "dtype", None)), full=cfg.fine_tune_type == "full")


def clara_work(cfg, stage: str, answer_tokens: int | None = None,
               candidates: int | None = None) -> Work:
    """A CLaRa stage's step (clara.method.tasks.ClaraTrainConfig). The decoder row is the
    prompt (about 64 tokens plus top_k slots of n_mem + 1) and the answer, taken as long as a
    document (stage 1's paraphrase) unless `answer_tokens` says otherwise."""
    from clara.method.config import padded_length

    c = cfg.method_config(stage)
    n_mem, k = c.n_mem, c.top_k
    enc_len = c.doc_max_tokens + n_mem + 3
    answer = c.doc_max_tokens if answer_tokens is None else answer_tokens
    dec_len = min(c.max_len, PROMPT_TOKENS + k * (n_mem + 1) + answer)
    B = cfg.batch_size
    docs = B * (candidates or k) if stage == "stage3" else B * k
    enc_rows = docs + (B if stage == "stage3" else 0)
    return Work(kind=stage, batch_size=B, enc_len=padded_length(enc_len), enc_rows=enc_rows,
                dec_len=padded_length(dec_len),  # logits over every decoder column (labels untrimmed)
                lora_rank=c.lora_rank, lora_keys=tuple(c.lora_keys), lora_layers=c.lora_layers,
                adapters_trained=2, adapters_held=len(c.adapters()),
                lora_dropout=c.lora_dropout, grad_checkpoint=cfg.grad_checkpoint,
                chunked_ce=c.chunked_ce, compiled=cfg.compile, dtype=_dtype(None))


def estimate_run(kind: str, cfg, model_source: str, backend: str | None = None) -> Estimate:
    """The estimate of a run about to start: kind "lora" or a CLaRa stage name."""
    shape = Shape.from_config(read_model_config(model_source))
    work = lora_work(cfg) if kind == "lora" else clara_work(cfg, kind)
    if work.kind != "lora":
        n_mem = cfg.method_config(kind).n_mem
        work.extra_trainable = n_mem * shape.hidden if cfg.train_memory_rows else 0
    if backend is None:  # the run about to start here: the limit its engine will give MLX
        from clara.train.engine import mlx_memory_limit

        work.mlx_limit_bytes = mlx_memory_limit(cfg) or 0
    return estimate(shape, work, backend)


def estimate_for_bench(config: dict, s: dict, kind: str, shapes: dict,
                       dropout: float = 0.0, backend: str | None = None, parts: bool = False):
    """bench/clara_throughput.py: the estimate (bytes) for its preset and the batch shapes it
    measured (the decoder's length depends on the tokenizer's prompt); `kind` may carry the
    bench's variants (stage1+chunk+ckpt+eager). With `parts`, the parts instead."""
    e = estimate(*bench_work(config, s, kind, shapes, dropout), backend)
    return e.parts if parts else e.peak_bytes


def bench_work(config: dict, s: dict, kind: str, shapes: dict,
               dropout: float = 0.0) -> tuple[Shape, Work]:
    """The model's shape and the step's Work of a bench row (see estimate_for_bench)."""
    shape = Shape.from_config(config)
    kind, *opts = kind.split("+")
    if kind in ("lora", "mlx-lm"):
        B, T = shapes["tokens"] if shapes else (s["batch_size"], _pad32(s["seq"] + 1))
        w = Work(kind="lora", batch_size=B, seq_len=T - 1, lora_rank=s["rank"], dtype=s["dtype"])
    else:
        n_mem = s["doc"] // s["cr"]
        w = Work(kind="stage1", batch_size=shapes["dec_ids"][0], enc_rows=shapes["enc_ids"][0],
                 enc_len=shapes["enc_ids"][1], dec_len=shapes["dec_ids"][1],
                 supervised_len=shapes["labels"][1], lora_rank=s["rank"], adapters_trained=2,
                 adapters_held=2, extra_trainable=n_mem * shape.hidden, lora_dropout=dropout,
                 dtype=s["dtype"])
    w.grad_checkpoint = "ckpt" in opts
    if kind != "lora" and kind != "mlx-lm":
        from clara.method.config import ClaraSettings

        w.chunked_ce = "chunk" in opts or ("nochunk" not in opts and ClaraSettings.chunked_ce)
    w.compiled = "eager" not in opts and kind != "mlx-lm"
    w.mlx_limit_bytes = next((int(float(o[3:]) * GB) for o in opts if o.startswith("lim")), 0)
    return shape, w


def _pad32(n: int) -> int:
    return 1 + 32 * ((n + 31) // 32)


def estimate_request(ws, kind: str, overrides: dict, config_file=None) -> Estimate:
    """The estimate of what `clara train KIND` would start with these settings: the CLI's
    --estimate and the app's Train form call this; nothing is created or loaded."""
    return estimate_run(kind, *_request_config(ws, kind, overrides, config_file))


# what auto_fit may switch on, in order, where the user set neither
FIT_SWITCHES = {"lora": (("grad_checkpoint",),),
                "clara": (("chunked_ce",), ("chunked_ce", "grad_checkpoint"))}


def auto_fit(ws, kind: str, overrides: dict, config_file=None) -> tuple[dict, str | None]:
    """When the estimate says the run would not fit (its peak over the memory guard's limit:
    memory_limit_gb, else 90 % of the device's budget) and gradient checkpointing (CLaRa:
    chunked CE first, then both) would make it fit, switch them on: (overrides with them,
    a line saying so); else (overrides, None). A switch given as a flag is left as it is, and
    an estimate that cannot be made (no config.json) changes nothing."""
    try:
        cfg, source = _request_config(ws, kind, overrides, config_file)
        est = estimate_run(kind, cfg, source)
    except UserError:
        return overrides, None
    limit = cfg.memory_limit_gb * GB if cfg.memory_limit_gb else 0.9 * est.budget_bytes
    if not limit or est.peak_bytes <= limit:
        return overrides, None
    for switches in FIT_SWITCHES["lora" if kind == "lora" else "clara"]:
        if any(overrides.get(k) is not None for k in switches):
            continue
        if all(getattr(cfg, k) for k in switches):
            continue
        trial = {**overrides, **dict.fromkeys(switches, True)}
        e = estimate_run(kind, *_request_config(ws, kind, trial, config_file))
        if e.peak_bytes <= limit:
            names = " and ".join(k.replace("_", " ").replace("grad", "gradient") for k in switches)
            return trial, (f"turned on {names}: the run would peak at about "
                           f"{est.peak_bytes / GB:.2f} GB, over the limit of "
                           f"{limit / GB:.2f} GB; with {names}, {e.peak_bytes / GB:.2f} GB")
    return overrides, None


def _request_config(ws, kind: str, overrides: dict, config_file=None):
    """(the run's merged config, its model's source) for the estimate."""
    from clara.models.registry import model_source
    from clara.train.config import merge_config

    overrides = {k: v for k, v in overrides.items() if v is not None}
    if kind == "lora":
        from clara.train.config import TrainConfig

        overrides.setdefault("data", "-")  # the data is not read for the estimate
        cfg = merge_config(TrainConfig, config_file, overrides)
    else:
        from clara.method.tasks import ClaraTrainConfig

        cfg = merge_config(ClaraTrainConfig, config_file, overrides)
        if not cfg.model and cfg.init_from:  # the base the earlier stage was trained on
            from clara import refs

            cfg.model = refs.resolve(ws, cfg.init_from, want=refs.CLARA).base or ""
        if not cfg.model:
            raise UserError("model: is required for the estimate")
    return cfg, model_source(ws, cfg.model)
