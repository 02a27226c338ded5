"""Document tokenization as the reference does it (clara-method §1.3): `<ENC>` + BOS + doc + EOS
tokenized as ONE string and cut to doc_max_tokens + 3 — checked on a Metaspace tokenizer with
prepend_scheme "first" (as many Llama/Mistral conversions have), whose first word tokenizes
differently alone than inside a string, and on the byte-level tiny model."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from clara.method.config import ClaraConfig
from clara.method.model import ClaraModel

from conftest import corpus_sentences

DOCS = ["Alia built the river mill in 1790.", "Borun sold a salt mine in 1801.",
        "Cetra guarded the northern archive until 1829 and then repaired the harbour bell."]
SPELLED = "see </s> and <MEM0> and <s> here"


@pytest.fixture(scope="module")
def metaspace_model_dir(tmp_path_factory):
    """A tiny random Llama whose tokenizer is a Metaspace BPE (prepend_scheme="first")."""
    from mlx_lm.models import llama
    from mlx_lm.utils import save_config, save_model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from clara.models.tiny import CHAT_TEMPLATE, TinyConfig, llama_config

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(corpus_sentences() + DOCS + [SPELLED], trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, min_frequency=2, show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                 unk_token="<unk>", chat_template=CHAT_TEMPLATE,
                                 additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    cfg = TinyConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=2, vocab_size=len(hf))
    config = llama_config(cfg, len(hf), hf)
    config["eos_token_id"] = hf.eos_token_id
    out = tmp_path_factory.mktemp("models") / "metaspace"
    out.mkdir()
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    save_model(out, model)
    save_config(config, out / "config.json")
    hf.save_pretrained(str(out))
    return out


def _model(path, **kw) -> ClaraModel:
    mx.random.seed(0)
    m = ClaraModel.from_base(ClaraConfig(base_model=str(path), doc_max_tokens=kw.pop("doc", 32),
                                         compression_rate=kw.pop("rate", 8), max_len=128))
    m.eval()
    return m


def _reference_rows(m: ClaraModel, docs: list[str]) -> list[list[int]]:
    """The reference's builder: one string, special tokens parsed, right truncation."""
    hf, s = m.hf, m.special
    out = []
    for d in docs:
        text = "<ENC>" + hf.bos_token + d + hf.eos_token
        ids = hf(text, add_special_tokens=False, truncation=True,
                 max_length=m.config.doc_max_tokens + 3)["input_ids"]
        out.append(list(ids) + list(s.mem))
    return out


def test_first_word_differs_alone_on_this_tokenizer(metaspace_model_dir):
    """The case exists: alone, the first word gets a leading '▁'; after a special, not."""
    m = _model(metaspace_model_dir)
    alone = m.hf.encode(DOCS[0], add_special_tokens=False)
    inside = m.hf.encode("<s>" + DOCS[0], add_special_tokens=False)[1:]
    assert alone != inside


@pytest.mark.parametrize("doc_max", [32, 6])
def test_encoder_rows_equal_the_reference(metaspace_model_dir, tiny_model_dir, doc_max):
    for path in (metaspace_model_dir, tiny_model_dir):
        m = _model(path, doc=doc_max, rate=2)
        assert m.encoder_rows(DOCS) == _reference_rows(m, DOCS)


def test_long_document_loses_eos_and_keeps_one_more_token(metaspace_model_dir):
    m = _model(metaspace_model_dir, doc=6, rate=2)
    s = m.special
    row = m.encoder_rows([DOCS[2]])[0]
    assert len(row) == 6 + 3 + m.config.n_mem
    assert row[:2] == [s.enc, s.bos] and s.eos not in row
    short = m.encoder_rows(["Alia"])[0]
    assert short[-m.config.n_mem - 1] == s.eos


def test_special_token_text_stays_text(metaspace_model_dir):
    m = _model(metaspace_model_dir)
    s = m.special
    row = m.encoder_rows([SPELLED])[0]
    body = row[2:-m.config.n_mem - 1]
    assert s.eos not in body and s.bos not in body and s.mem[0] not in body
    assert row.count(s.mem[0]) == 1  # only the appended memory token
    assert m.hf.decode(body) == SPELLED
    # and the compressed vectors of a Metaspace model follow from the reference ids
    b = m.encoder_batch(DOCS[:2])
    ref = _reference_rows(m, DOCS[:2])
    ids, mask = np.array(b["enc_ids"]), np.array(b["enc_mask"])
    for r, keep, want in zip(ids, mask, ref):
        assert list(r[keep == 1]) == want  # the padding side is the batch's business
