"""The tokens CLaRa adds to the base tokenizer: <MEM0>..<MEM{n-1}>, <AE>, <ENC>, <SEP>.

They are added as special tokens (so each is one id and is never split), appended after any
existing ones, in that order. mlx-lm's TokenizerWrapper builds its detokenizer token map once,
so the wrapper is rebuilt after the addition (mlx-lm-notes §1 gotcha).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

from clara.errors import UserError

AE, ENC, SEP = "<AE>", "<ENC>", "<SEP>"


def memory_tokens(n_mem: int) -> list[str]:
    return [f"<MEM{i}>" for i in range(n_mem)]


def added_tokens(n_mem: int) -> list[str]:
    """Every token CLaRa adds, in id order: the memory rows first, then <AE>, <ENC>, <SEP>."""
    return memory_tokens(n_mem) + [AE, ENC, SEP]


@dataclass(frozen=True)
class SpecialIds:
    mem: tuple[int, ...]
    ae: int
    enc: int
    sep: int
    bos: int | None
    eos: int
    pad: int

    @property
    def first(self) -> int:
        """Id of <MEM0>; the added tokens are the contiguous ids first .. first + count - 1."""
        return self.mem[0]

    @property
    def count(self) -> int:
        return len(self.mem) + 3

    def added(self) -> dict[str, int]:
        names = added_tokens(len(self.mem))
        return dict(zip(names, list(self.mem) + [self.ae, self.enc, self.sep]))


def _rebuild_wrapper(old, hf):
    from mlx_lm.tokenizer_utils import SPMStreamingDetokenizer, TokenizerWrapper

    detok = type(old._detokenizer)
    if detok is SPMStreamingDetokenizer:
        detok = partial(SPMStreamingDetokenizer, trim_space=old._detokenizer.trim_space)
    return TokenizerWrapper(
        hf, detok, eos_token_ids=list(old.eos_token_ids),
        chat_template=getattr(old, "_chat_template", None),
        tool_call_start=getattr(old, "_tool_call_start", None),
        tool_call_end=getattr(old, "_tool_call_end", None),
        tool_parser=getattr(old, "_tool_parser", None),
        response_format=getattr(old, "_response_format", None),
    )


def extend_tokenizer(tokenizer, n_mem: int):
    """Add the CLaRa tokens to an mlx-lm TokenizerWrapper; return (new wrapper, SpecialIds).

    Idempotent: a tokenizer that already has exactly these tokens keeps their ids.
    """
    hf = tokenizer._tokenizer
    names = added_tokens(n_mem)
    vocab = hf.get_vocab()
    present = [t for t in names if t in vocab]
    if present and len(present) != len(names):
        raise UserError(f"tokenizer already has some CLaRa tokens ({', '.join(present[:4])}) "
                         f"but not all {len(names)}: was it extended for another n_mem?")
    if not present:
        if any(re.fullmatch(r"<MEM\d+>", t) for t in vocab):
            raise UserError("tokenizer already has <MEM…> tokens of a different count")
        hf.add_special_tokens({"additional_special_tokens": names},
                              replace_extra_special_tokens=False)
    ids = hf.convert_tokens_to_ids(names)
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise UserError(f"the added tokens did not get contiguous ids: {ids}")
    for name, i in zip(names, ids):
        if hf.encode(name, add_special_tokens=False) != [i]:
            raise UserError(f"{name} does not encode as one token")
    if hf.pad_token_id is None:  # as the reference: pad with BOS (Mistral has no pad token)
        hf.pad_token = hf.bos_token if hf.bos_token is not None else hf.eos_token
    hf.padding_side = "left"
    if hf.eos_token_id is None:
        raise UserError("the base tokenizer has no EOS token")
    special = SpecialIds(mem=tuple(ids[:n_mem]), ae=ids[n_mem], enc=ids[n_mem + 1],
                         sep=ids[n_mem + 2], bos=hf.bos_token_id, eos=hf.eos_token_id,
                         pad=hf.pad_token_id)
    return _rebuild_wrapper(tokenizer, hf), special


def contains_added_token(text: str, n_mem: int) -> str | None:
    """The first CLaRa token spelled literally inside user text, if any."""
    for t in added_tokens(n_mem):
        if t in text:
            return t
    return None


# A private-use character marks where a document starts inside the string the encoder reads.
_SENTINEL = "\ue000"
_IN_CONTEXT: dict[int, tuple] = {}


def _context_tokenizer(hf):
    """A copy of `hf`'s fast backend that reads every special token's text as plain text and
    knows one extra non-special token, the sentinel, split off before normalization (as the
    special tokens are); None for a tokenizer without a fast backend."""
    cached = _IN_CONTEXT.get(id(hf))
    if cached is not None and cached[0] is hf:
        return cached[1]
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import AddedToken, Tokenizer

    clone = Tokenizer.from_str(backend.to_str())
    clone.no_truncation()
    clone.no_padding()
    clone.add_tokens([AddedToken(_SENTINEL, special=False, normalized=False)])
    clone.encode_special_tokens = True
    _IN_CONTEXT[id(hf)] = (hf, clone)
    return clone


def encode_in_context(hf, text: str) -> list[int]:
    """The ids of `text` as the reference tokenizes a document: inside the string `<ENC>` BOS
    text EOS, i.e. as a piece that follows a special token (a Metaspace tokenizer with
    prepend_scheme "first" then adds no leading "▁"), while text spelling a special token
    stays plain text."""
    clone = _context_tokenizer(hf)
    if clone is None or _SENTINEL in text:
        return hf.encode(text, add_special_tokens=False, split_special_tokens=True)
    ids = clone.encode(_SENTINEL + text, add_special_tokens=False).ids
    return ids[1:]
