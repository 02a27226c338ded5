"""Build a small Llama-architecture model from scratch: a BPE tokenizer trained on the user's
text (special tokens and a ChatML chat template included) and random weights, saved in mlx-lm's
format so that `mlx_lm.load` and `mlx_lm.generate` accept it.

The tokenizer is trained with Hugging Face `tokenizers` (byte-level BPE, so any script, Korean
included, round-trips); the model is mlx-lm's own `llama.Model`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from clara import io

PAD, BOS, EOT = "<|pad|>", "<|bos|>", "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK_START, THINK_END = "<think>", "</think>"
SPECIAL_TOKENS = [PAD, BOS, EOT, IM_START, IM_END, THINK_START, THINK_END]

# ChatML, as Qwen and many small models use it; the reasoning block is `<think>...</think>`.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class TinyConfig:
    hidden_size: int = field(default=128, metadata={"help": "Width of the residual stream."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Number of transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Query heads per layer."})
    num_key_value_heads: int | None = field(
        default=None, metadata={"help": "Key/value heads (GQA); default: as many as query heads."})
    intermediate_size: int | None = field(
        default=None, metadata={"help": "MLP width; default: about 8/3 of hidden, rounded to 32."})
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary size to train."})
    max_position_embeddings: int = field(default=4096, metadata={"help": "Longest context."})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base frequency."})
    init_std: float | None = field(default=None, metadata={
        "help": "Std of a normal init of every weight; None: MLX's layer defaults (embeddings "
                "N(0, 1/hidden), linears U(+-1/sqrt(fan_in))), which train far faster at this "
                "size than GPT-2's 0.02."})
    seed: int = field(default=0, metadata={"help": "Seed of the weight init."})

    def validate(self) -> "TinyConfig":
        """Refuse a geometry mlx-lm's Llama cannot build, naming the option to change."""
        from clara.errors import UsageError

        for name, opt in (("hidden_size", "--hidden"), ("num_hidden_layers", "--layers"),
                          ("num_attention_heads", "--heads"), ("vocab_size", "--vocab"),
                          ("max_position_embeddings", None), ("intermediate_size", None),
                          ("num_key_value_heads", "--kv-heads")):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UsageError(f"{opt or name}: must be a positive whole number, got {value}")
        heads = self.num_attention_heads
        if self.hidden_size % heads:
            raise UsageError(f"--hidden {self.hidden_size} is not divisible by --heads {heads}")
        if (self.hidden_size // heads) % 2:
            raise UsageError(f"--hidden / --heads = {self.hidden_size // heads}: each head needs "
                             "an even width (rotary embeddings turn pairs)")
        if heads % (self.num_key_value_heads or heads):
            raise UsageError(f"--heads {heads} is not divisible by --kv-heads "
                             f"{self.num_key_value_heads}")
        if self.vocab_size < len(SPECIAL_TOKENS) + 256:
            raise UsageError(f"--vocab {self.vocab_size}: at least {len(SPECIAL_TOKENS) + 256} "
                             "(256 bytes and the special tokens)")
        if self.init_std is not None and not (self.init_std > 0 and self.init_std < float("inf")):
            raise UsageError(f"init_std: must be a positive finite number, got {self.init_std}")
        return self


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=IM_END, pad_token=PAD,
        unk_token=None, additional_special_tokens=[EOT, IM_START, THINK_START, THINK_END],
        chat_template=CHAT_TEMPLATE, model_max_length=1 << 20, padding_side="left",
    )


def llama_config(cfg: TinyConfig, vocab_size: int, tokenizer) -> dict:
    hidden = cfg.hidden_size
    inter = cfg.intermediate_size or max(32, int(round(hidden * 8 / 3 / 32)) * 32)
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads or cfg.num_attention_heads,
        "intermediate_size": inter,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-5,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": [tokenizer.convert_tokens_to_ids(IM_END),
                         tokenizer.convert_tokens_to_ids(EOT)],
        "pad_token_id": tokenizer.pad_token_id,
    }


def build_tiny_model(out_dir: str | Path, texts: Iterable[str], cfg: TinyConfig | None = None,
                     extra_config: dict | None = None) -> Path:
    """Train a tokenizer on `texts`, make a random Llama of `cfg`, save both to `out_dir`.

    The folder is written under a temporary name and renamed at the end, so a failure leaves
    nothing half-built.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.models import llama
    from mlx_lm.utils import save_config, save_model

    cfg = (cfg or TinyConfig()).validate()
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(out_dir)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("no text to train the tokenizer on")
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    vocab = len(tokenizer)
    config = llama_config(cfg, vocab, tokenizer)
    config.update(extra_config or {})

    mx.random.seed(cfg.seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    if cfg.init_std is not None:
        params = tree_map(lambda p: mx.random.normal(p.shape) * cfg.init_std, model.parameters())
        # RMSNorm weights start at one, as in every Llama.
        params = dict(tree_flatten(params))
        for name in list(params):
            if name.endswith("norm.weight"):
                params[name] = mx.ones_like(params[name])
        model.load_weights(list(params.items()))
    mx.eval(model.parameters())
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))

    tmp = out_dir.with_name(f".{out_dir.name}.building")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(tmp, model)
    save_config(config, tmp / "config.json")
    tokenizer.save_pretrained(str(tmp))
    io.write_json(tmp / "generation_config.json",
                  {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
                   "pad_token_id": config["pad_token_id"]})
    io.write_json(tmp / "clara_tiny.json", {**asdict(cfg), "parameters": int(n_params),
                                            "vocab_size": vocab})
    tmp.rename(out_dir)
    return out_dir


def dataset_texts(dataset_dir: str | Path, splits=("train", "valid")) -> list[str]:
    """Every string in a dataset's rows (text, messages, docs, questions, answers)."""
    out: list[str] = []

    def collect(value):
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            for v in value:
                collect(v)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)

    for split in splits:
        path = Path(dataset_dir) / f"{split}.jsonl"
        if path.is_file():
            for _, row in io.iter_jsonl(path):
                collect(row)
    return out
