"""The reasoning block of a chat model, recognised from its tokenizer and chat template, so that chat
can hide it (split it off the answer) or ban it (a logit bias on its opening token).

Two styles are known:
- `tokens`: a `<think>`...`</think>` pair (or the other pairs mlx-lm's `TokenizerWrapper`
  recognises). The opening token is one id: banning it turns reasoning off.
- `hcx`: HyperCLOVA X SEED Think's role style. After `<|im_start|>assistant` the model writes
  `/think\\n`, its reasoning, then `<|im_end|>\\n<|im_start|>assistant` and the answer (or `\\n` and
  the answer straight away). The chat template's `skip_reasoning` / `force_reasoning` switches
  choose; there is no single token to ban.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HCX_START = "/think\n"
HCX_END = "<|im_end|>\n<|im_start|>assistant"


@dataclass(frozen=True)
class ReasoningMarkers:
    style: str = field(metadata={"help": "'tokens' (<think> pair) or 'hcx' (SEED Think roles)."})
    start: str = field(metadata={"help": "Text that opens the reasoning block."})
    end: str = field(metadata={"help": "Text that closes it."})
    start_ids: tuple = field(default=(), metadata={"help": "Token ids of `start`."})
    end_ids: tuple = field(default=(), metadata={"help": "Token ids of `end`."})
    ban_ids: tuple = field(default=(), metadata={
        "help": "Ids whose logit bias of -inf turns reasoning off (empty: use `off_kwargs`)."})
    off_kwargs: dict = field(default_factory=dict, metadata={
        "help": "apply_chat_template keyword arguments that turn reasoning off."})
    in_chat_template: bool = field(default=False, metadata={
        "help": "The chat template itself writes or mentions the block."})

    def to_dict(self) -> dict:
        return {"style": self.style, "start": self.start, "end": self.end,
                "start_ids": list(self.start_ids), "end_ids": list(self.end_ids),
                "ban_ids": list(self.ban_ids), "off_kwargs": dict(self.off_kwargs),
                "in_chat_template": self.in_chat_template}


def _template_text(tokenizer) -> str:
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    hf = tokenizer._tokenizer if isinstance(tokenizer, TokenizerWrapper) else tokenizer
    template = getattr(hf, "chat_template", None) or ""
    if isinstance(template, dict):
        template = "\n".join(str(v) for v in template.values())
    return str(template)


def _encode(tokenizer, text: str) -> tuple:
    return tuple(tokenizer.encode(text, add_special_tokens=False))


def reasoning_markers(tokenizer) -> ReasoningMarkers | None:
    """The reasoning block of `tokenizer` (an mlx-lm `TokenizerWrapper` or a transformers
    tokenizer), or None when it has none."""
    template = _template_text(tokenizer)
    off = {}
    if "enable_thinking" in template:
        off["enable_thinking"] = False
    if "skip_reasoning" in template:
        off["skip_reasoning"] = True
    vocab = tokenizer.get_vocab()
    # The template is the source of truth for the HCX role style; it has no dedicated tokens.
    if "/think" in template and "<|im_end|>" in vocab and "<|im_start|>" in vocab:
        return ReasoningMarkers("hcx", HCX_START, HCX_END, _encode(tokenizer, HCX_START),
                                _encode(tokenizer, HCX_END), (), off, True)
    if getattr(tokenizer, "has_thinking", False):
        start, end = tokenizer.think_start, tokenizer.think_end
        start_ids, end_ids = tuple(tokenizer.think_start_tokens), tuple(tokenizer.think_end_tokens)
    elif "<think>" in vocab and "</think>" in vocab:  # a raw transformers tokenizer
        start, end = "<think>", "</think>"
        start_ids, end_ids = (vocab[start],), (vocab[end],)
    else:
        return None
    return ReasoningMarkers("tokens", start, end, start_ids, end_ids,
                            start_ids if len(start_ids) == 1 else (), off, start in template)


def split_reasoning(text: str, markers: ReasoningMarkers | None) -> tuple[str | None, str]:
    """(reasoning or None, answer) of a generated text. An unfinished block is all reasoning."""
    if markers is None:
        return None, text
    if markers.style == "hcx":
        if not text.startswith(markers.start):
            return None, text[1:] if text.startswith("\n") else text
        body = text[len(markers.start):]
        reasoning, found, answer = body.partition(markers.end)
        return reasoning, (answer[1:] if answer.startswith("\n") else answer) if found else ""
    before, found, after = text.partition(markers.start)
    if not found:
        # The template may already have opened the block in the prompt.
        reasoning, closed, answer = text.partition(markers.end)
        return (reasoning, answer.lstrip("\n")) if closed else (None, text)
    reasoning, closed, answer = after.partition(markers.end)
    return (reasoning, (before + answer).lstrip("\n")) if closed else (reasoning, before)
