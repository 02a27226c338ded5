"""Benchmark a model (and adapter): load time, prompt and generation speed, peak memory."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class BenchResult:
    model: str
    adapter: str | None
    dtype: str
    quantization: str | None
    load_seconds: float
    prompt_tokens: int
    prompt_tokens_per_second: float
    generation_tokens: int
    generation_tokens_per_second: float
    peak_memory_gb: float
    weights_bytes: int | None
    backend: str
    blas_preload: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def bench_model(source: str, adapter: str | None = None, prompt_tokens: int = 128,
                generation_tokens: int = 64, trials: int = 2, seed: int = 0,
                dtype: str | None = None) -> BenchResult:
    """Median over `trials` of mlx-lm's own prompt/generation timings, with a random prompt and
    the end-of-sequence tokens banned so every trial generates the full length."""
    import mlx.core as mx
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    from clara.models.loading import load_model
    from clara.platform import backend, blas_library, blas_preloaded

    loaded = load_model(source, adapter_path=adapter, dtype=dtype)
    model, tok = loaded.model, loaded.tokenizer
    vocab = loaded.config.get("vocab_size") or len(tok._tokenizer)
    mx.random.seed(seed)
    prompt = mx.random.randint(0, vocab, (prompt_tokens,)).tolist()
    ban = make_logits_processors(logit_bias={int(i): -1e9 for i in tok.eos_token_ids})
    runs = []
    mx.reset_peak_memory()
    for _ in range(max(1, trials) + 1):  # the first pass warms up
        last = None
        for last in stream_generate(model, tok, prompt, max_tokens=generation_tokens,
                                    sampler=make_sampler(0.0), logits_processors=ban):
            pass
        runs.append(last)
    runs = runs[1:]
    mid = sorted(runs, key=lambda r: r.generation_tps)[len(runs) // 2]
    q = loaded.quantization
    return BenchResult(
        model=source, adapter=loaded.adapter_path, dtype=loaded.dtype,
        quantization=f"{q.get('bits')}-bit gs{q.get('group_size')}" if q else None,
        load_seconds=round(loaded.load_seconds, 3), prompt_tokens=mid.prompt_tokens,
        prompt_tokens_per_second=round(mid.prompt_tps, 1),
        generation_tokens=mid.generation_tokens,
        generation_tokens_per_second=round(mid.generation_tps, 1),
        peak_memory_gb=round(mx.get_peak_memory() / 1e9, 4), weights_bytes=_weights_size(source),
        backend=backend(),
        blas_preload=blas_library() if blas_preloaded() else None)


def _weights_size(source: str) -> int | None:
    """Bytes of the safetensors weights of a local model folder (None for a hub id)."""
    from pathlib import Path

    folder = Path(source)
    files = list(folder.glob("*.safetensors")) if folder.is_dir() else []
    return sum(f.stat().st_size for f in files) or None
