"""The generator prompts of the CLaRa stages (clara-method §1.6), rendered by the model's own
chat template with thinking disabled.

Each document occupies one slot of n_mem memory placeholders followed by <SEP>; the placeholders
are replaced by the compressed vectors at injection time.
"""

from __future__ import annotations

import random

from clara.errors import UserError
from clara.method.tokens import SEP, memory_tokens

SYSTEM_SCP_QA = ("You are a helpful assistant. Given a document, your task is to generate some "
                 "single questions to cover all key information of the document and answer them "
                 "sequentially.")
SYSTEM_PARAPHRASE = ("You are a helpful assistant. Your task is follow the instructions to "
                     "paraphrase the background information.")
SYSTEM_RAG = ("You are a helpful assistant. Your task is to extract relevant information from "
              "provided documents and to answer to questions as briefly as possible.")

# Thirteen ways to ask for a paraphrase; one is drawn uniformly per stage-1 paraphrase sample.
PARAPHRASE_INSTRUCTIONS = (
    "Background: {docs} means the same as",
    "These two expressions are equivalent in essence:\n(1) {docs}\n(2)",
    "Background: {docs}, which also means:",
    "Restate the following in other words.\n{docs}\nRestated:",
    "{docs}\nSay the same thing differently:",
    "Background: {docs}\nIn plain words, this says that",
    "Here is a passage: {docs}\nA faithful paraphrase of it is:",
    "Rewrite the background without changing its meaning.\nBackground: {docs}\nRewritten:",
    "Background: {docs}\nPut another way:",
    "The text {docs} can be expressed as follows:",
    "Paraphrase this passage: {docs}",
    "Background: {docs}\nThe same information, worded anew:",
    "{docs}\nTo summarise the passage above in different words:",
)


def slot(n_mem: int) -> str:
    """One document slot: <MEM0>..<MEM{n-1}><SEP>."""
    return "".join(memory_tokens(n_mem)) + SEP


def docs_placeholder(n_mem: int, k: int) -> str:
    return slot(n_mem) * k


def scp_qa(n_mem: int, questions: list[str], answers: list[str]) -> tuple[str, str, str]:
    """(a) stage-1 QA: all QA pairs of the document as the answer, one sample per document."""
    body = "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in zip(questions, answers))
    return SYSTEM_SCP_QA, f"Background:\n{docs_placeholder(n_mem, 1)}", body


def scp_paraphrase(n_mem: int, paraphrase: str, rng: random.Random,
                   k: int = 1) -> tuple[str, str, str]:
    """(b) stage-1 paraphrase with a randomly drawn instruction."""
    instruction = rng.choice(PARAPHRASE_INSTRUCTIONS)
    return SYSTEM_PARAPHRASE, instruction.format(docs=docs_placeholder(n_mem, k)), paraphrase


def rag_qa(n_mem: int, k: int, question: str, answer: str = "") -> tuple[str, str, str]:
    """(c) question answering from k compressed documents (stages 2 and 3, inference)."""
    # No space after "Question:", as in the reference template.
    return SYSTEM_RAG, f"Background:\n{docs_placeholder(n_mem, k)}\n\nQuestion:{question}", answer


def _render(hf, messages, add_generation_prompt: bool) -> str:
    return hf.apply_chat_template(messages, tokenize=False,
                                  add_generation_prompt=add_generation_prompt,
                                  enable_thinking=False)


def render(tokenizer, system: str, user: str, answer: str | None = None) -> tuple[list[int], int]:
    """Token ids of the chat (with the assistant answer when given) and the prompt length.

    The prompt length is the token count of the prompt rendered with the generation prompt; the
    reference supervises everything after it (the answer and the template's end of turn).
    Templates that reject a system role get system + "\\n" + user as one user turn.
    """
    from jinja2.exceptions import TemplateError

    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    if getattr(hf, "chat_template", None) is None:
        raise UserError("the base model's tokenizer has no chat template")
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    try:
        prompt = _render(hf, msgs, True)
    except TemplateError as e:
        if "system role not supported" not in str(e).lower():
            raise
        msgs = [{"role": "user", "content": f"{system}\n{user}"}]
        prompt = _render(hf, msgs, True)
    prompt_ids = hf.encode(prompt, add_special_tokens=False)
    if answer is None:
        return prompt_ids, len(prompt_ids)
    full = _render(hf, msgs + [{"role": "assistant", "content": answer}], False)
    return hf.encode(full, add_special_tokens=False), len(prompt_ids)
