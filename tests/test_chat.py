"""The chat engine on a tiny real model: reasoning split and ban, greedy determinism, the log,
multi-turn, adapter swapping on a cached base, runs as adapters, CLaRa answers, clear errors."""

from __future__ import annotations

import json
from dataclasses import asdict

import mlx.core as mx
import pytest

from clara import io

from clara.chat.engine import ChatEngine, ChatSettings
from clara.chat.log import FIELDS
from clara.chat.models import ModelCache, adapter_at, resolve_adapter
from clara.chat.reasoning import Delta, ThinkSplitter, ban_bias, split
from clara.errors import UserError
from clara.models.thinking import ReasoningMarkers
from clara.workspace import Workspace
from test_chat_helpers import make_clara_checkpoint, make_lora_adapter

MARKERS = ReasoningMarkers("tokens", "<think>", "</think>", (5,), (6,), (5,))
Q = "Who built the river mill?"


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("chat")
    ws = Workspace(root / "ws", "chat").create()
    a = make_lora_adapter(root / "adapter-a", tiny_model_dir, seed=1)
    b = make_lora_adapter(root / "adapter-b", tiny_model_dir, seed=2)
    cache = ModelCache()
    return ws, a, b, cache, root


def engine(env, log=True):
    ws, _, _, cache, _ = env
    return ChatEngine(ws, cache=cache, log=log)


# -- reasoning ---------------------------------------------------------------------------------
def test_split_complete_unfinished_and_absent_blocks():
    assert split("<think>plan it</think>\n\nParis.", MARKERS) == ("plan it", "Paris.")
    assert split("<think>still thinking, no end", MARKERS) == ("still thinking, no end", "")
    assert split("Just an answer.", MARKERS) == (None, "Just an answer.")
    # The template may open the block in the prompt: only the close marker is generated.
    assert split("hidden plan</think>Rome.", MARKERS) == ("hidden plan", "Rome.")
    assert split("<think>x</think>y", None) == (None, "<think>x</think>y")


def test_stream_splitter_matches_final_split_and_holds_partial_markers():
    text = "<think>first a plan</think>\nthe answer is 42"
    pieces = ["<th", "ink>", "first a ", "plan</th", "ink>", "\nthe answer", " is 42"]
    sp = ThinkSplitter(MARKERS)
    deltas = []
    for p in pieces:
        got = sp.feed(p)
        assert all("<" not in d.text for d in got), got  # a half marker is never shown
        deltas += got
    deltas += sp.finish()
    reasoning = "".join(d.text for d in deltas if d.reasoning)
    answer = "".join(d.text for d in deltas if not d.reasoning)
    assert (reasoning, answer) == ("first a plan", "the answer is 42")
    assert split(text, MARKERS) == (reasoning, answer)
    # unfinished: everything streams as reasoning, nothing as answer
    sp = ThinkSplitter(MARKERS)
    out = sp.feed("<think>abc") + sp.feed(" def") + sp.finish()
    assert out == [Delta("abc", True), Delta(" def", True)]


def test_ban_bias_targets_the_marker_tokens():
    assert ban_bias(MARKERS) == {5: float("-inf"), 6: float("-inf")}
    assert ban_bias(None) == {}


def test_banning_really_removes_the_thinking_tokens(env):
    eng = engine(env, log=False)
    base = resolve_base(env)
    tok = eng.cache.base(base).tokenizer
    think, end = tok.think_start_id, tok.think_end_id
    # A bias that makes the tiny model open a reasoning block at once...
    pushed = ChatSettings(max_tokens=8, logit_bias={think: 30.0}, show_reasoning=True)
    s = eng.session(base, settings=pushed)
    deltas = list(s.stream(Q))
    assert think in s.last.tokens and s.last.reasoning is not None
    assert all(d.reasoning for d in deltas) and s.last.text == ""
    # ...is overridden by the ban: the tokens never appear.
    banned = ChatSettings(max_tokens=8, logit_bias={think: 30.0}, ban_thinking=True)
    r = eng.session(base, settings=banned).ask(Q)
    assert think not in r.tokens and end not in r.tokens and len(r.tokens) == 8
    assert r.reasoning is None
    # hidden (the default): the reasoning is split off and not streamed
    hidden = eng.session(base, settings=ChatSettings(max_tokens=8, logit_bias={think: 30.0}))
    assert list(hidden.stream(Q)) == [] and hidden.last.reasoning


def test_biased_sampler_gives_the_logit_bias_processors_tokens(env):
    """The engine's bias goes through the sampler (no logits processor, which costs mlx-lm a
    growing token history and a scatter per token): the same tokens as mlx-lm's logit_bias
    processor, greedy and sampled with top-p under one seed."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    from clara.chat.engine import biased_sampler

    entry = engine(env, log=False).cache.base(resolve_base(env))
    m, tok = entry.model, entry.tokenizer
    ids = tok.encode(Q)
    bias = {int(tok.think_start_id): 30.0, 7: float("-inf"), 9: 4.0}
    for temp, top_p in ((0.0, 0.0), (0.9, 0.8)):
        runs = []
        for own in (False, True):
            mx.random.seed(3)
            base = make_sampler(temp=temp, top_p=top_p)
            kw = {"sampler": biased_sampler(base, bias, renormalize=temp > 0)} if own else \
                {"sampler": base, "logits_processors": make_logits_processors(logit_bias=bias)}
            runs.append([r.token for r in stream_generate(m, tok, ids, max_tokens=10, **kw)])
        assert runs[0] == runs[1] and len(runs[0]) == 10, runs
        assert 7 not in runs[0]
    assert runs[0].count(int(tok.think_start_id)) > 0  # the +30 bias does act


def resolve_base(env):
    cfg = json.loads((env[1] / "adapter_config.json").read_text())
    return cfg["model"]


# -- decoding, stats, log ----------------------------------------------------------------------
def test_greedy_replies_are_deterministic_and_seeds_reproduce(env):
    eng = engine(env, log=False)
    base = resolve_base(env)
    greedy = ChatSettings(max_tokens=16)
    r1 = eng.session(base, settings=greedy).ask(Q)
    r2 = eng.session(base, settings=greedy).ask(Q)
    assert r1.tokens == r2.tokens and len(r1.tokens) > 0
    hot = lambda seed: eng.session(base, settings=ChatSettings(  # noqa: E731
        max_tokens=16, temperature=1.5, seed=seed)).ask(Q).tokens
    assert hot(3) == hot(3)
    assert hot(3) != hot(4)
    r = eng.session(base, settings=ChatSettings(max_tokens=16, temperature=1.0, top_p=0.5,
                                               seed=0)).ask(Q)
    assert r.generation_tokens == len(r.tokens) <= 16


def test_every_exchange_is_logged_with_every_field(env):
    ws = env[0]
    eng = engine(env)
    settings = ChatSettings(max_tokens=6, system="Be brief.", temperature=0.0)
    s = eng.session(resolve_base(env), adapter=str(env[1]), settings=settings)
    r1 = s.ask(Q)
    r2 = s.ask("And when?")
    rows = [r for r in eng.log.read() if r["session"] == s.id]
    assert [r["turn"] for r in rows] == [1, 2]
    for row, reply in zip(rows, (r1, r2)):
        for f in FIELDS:
            key_holder = row["settings"] if f in row["settings"] else row
            assert f in key_holder, f
        assert row["reply"] == reply.text and row["prompt_tokens"] == reply.prompt_tokens
        assert row["generation_tokens"] == reply.generation_tokens > 0
        assert row["peak_memory"] > 0 and row["latency"] >= row["ttft"] > 0
        assert row["generation_tps"] > 0 and row["prompt_tps"] > 0
        assert row["adapter"] == str(env[1]) and row["kind"] == "lora"
        assert row["settings"]["system"] == "Be brief." and row["settings"]["thinking"] == "hidden"
        assert row["workspace"] == ws.name
    csv_rows = [r for r in eng.log.read_csv() if r["session"] == s.id]
    assert len(csv_rows) == 2 and set(csv_rows[0]) == set(FIELDS)
    assert csv_rows[1]["prompt"] == "And when?" and csv_rows[1]["system"] == "Be brief."
    assert int(csv_rows[0]["prompt_tokens"]) == r1.prompt_tokens
    # multi-turn: the second prompt carries the first exchange
    assert r2.prompt_tokens > r1.prompt_tokens


def test_single_turn_prompts_stand_alone(env):
    eng = engine(env, log=False)
    s = eng.session(resolve_base(env), settings=ChatSettings(max_tokens=4, multi_turn=False))
    a, b = s.ask(Q), s.ask(Q)
    assert a.prompt_tokens == b.prompt_tokens and a.tokens == b.tokens and s.history == []


# -- adapters ----------------------------------------------------------------------------------
def test_switching_adapters_reuses_the_base_and_changes_outputs(env, tiny_model_dir):
    from clara.models.loading import load_model

    _, a, b, _, _ = env
    cache = ModelCache()
    eng = ChatEngine(None, cache=cache, log=False)
    s = eng.session(str(tiny_model_dir), settings=ChatSettings(max_tokens=12))
    entry = s.entry
    embed = entry.model.model.embed_tokens.weight
    q_proj = entry.model.model.layers[0].self_attn.q_proj.weight
    bare = s.ask(Q).tokens
    s.set_adapter(str(a))
    with_a = s.ask(Q).tokens
    s.set_adapter(str(b))
    with_b = s.ask(Q).tokens
    s.set_adapter(None)
    back = s.ask(Q).tokens
    assert cache.loads == 1 and entry.swaps == 3 and s.entry is entry
    assert with_a != bare and with_b != bare and with_a != with_b
    assert back == bare
    # the base's own arrays: the very same objects all along
    assert entry.model.model.embed_tokens.weight is embed
    assert entry.model.model.layers[0].self_attn.q_proj.weight is q_proj
    # the swapped-in adapter gives what a fresh load of base + adapter gives
    s.set_adapter(str(a))
    fresh = load_model(str(tiny_model_dir), adapter_path=a)
    ids = mx.array([s.prompt_ids(Q)])
    assert mx.allclose(entry.model(ids), fresh.model(ids), atol=1e-5).item()
    # a second session on the same base shares it
    eng.session(str(tiny_model_dir), adapter=str(b))
    assert cache.loads == 1


def test_runs_are_adapters_with_best_last_and_steps(env, tiny_model_dir):
    from clara import io
    from clara.runs import create_run
    from clara.train import tasks
    from clara.train.config import EngineConfig, TrainConfig, merge_config
    from clara.train.engine import Engine

    ws, _, _, cache, root = env
    data = root / "sft"
    rows = [{"messages": [{"role": "user", "content": Q},
                          {"role": "assistant", "content": "Alia built the river mill."}]}] * 8
    io.write_jsonl(data / "train.jsonl", rows)
    io.write_jsonl(data / "valid.jsonl", rows[:2])
    cfg = merge_config(TrainConfig, None, {
        "model": str(tiny_model_dir), "data": str(data), "iters": 4, "batch_size": 4,
        "max_seq_length": 64, "learning_rate": 1e-2, "val_every": 2, "save_every": 2,
        "lora_rank": 4, "keep_checkpoints": 5})
    run = create_run(ws, "lora", asdict(cfg), resolved={"model": str(tiny_model_dir),
                                                        "data": str(data)})
    doc = run.config()
    Engine(tasks.create("lora", doc, run.path), EngineConfig.from_dict(doc["config"]),
           run.path).run()
    best = resolve_adapter(ws, run.id)
    assert best.kind == "lora" and best.path.name == "best" and best.label == f"{run.id}:best"
    assert best.base == str(tiny_model_dir)
    assert resolve_adapter(ws, f"{run.id}:last").path.name == "step-0000004"
    assert resolve_adapter(ws, f"{run.id}:2").path.name == "step-0000002"
    assert resolve_adapter(ws, f"{run.id}:step-2").path.name == "step-0000002"
    with pytest.raises(UserError, match="no checkpoint 'step-0000009'.*it has: best"):
        resolve_adapter(ws, f"{run.id}:9")
    # no model given: the run's base; trained for a few steps toward the answer
    eng = ChatEngine(ws, cache=cache, log=False)
    s = eng.session(adapter=f"{run.id}:last", settings=ChatSettings(max_tokens=8))
    assert s.source == str(tiny_model_dir)
    trained = s.ask(Q).tokens
    s.set_adapter(None)
    assert s.ask(Q).tokens != trained


def test_missing_adapter_and_incompatible_base_fail_clearly(env, tmp_path, tiny_model_dir):
    from clara.models.tiny import TinyConfig, build_tiny_model
    from conftest import corpus_sentences

    ws, a, _, _, root = env
    with pytest.raises(UserError, match="adapter folder does not exist"):
        resolve_adapter(ws, str(tmp_path / "nothing-here"))
    with pytest.raises(UserError, match="no run 'no-such-run'"):
        resolve_adapter(ws, "no-such-run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no adapter_config.json"):
        adapter_at(tmp_path / "empty")
    other = build_tiny_model(tmp_path / "other", corpus_sentences(80),
                             TinyConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        vocab_size=300))
    cache = ModelCache()
    eng = ChatEngine(None, cache=cache, log=False)
    with pytest.raises(UserError, match=r"does not match the base .*hidden_size 64 vs 32"):
        eng.session(str(other), adapter=str(a))
    # without a recorded base, the shapes tell: clear error, and the base is left bare
    anon = make_lora_adapter(tmp_path / "anon", tiny_model_dir, seed=5, record_base=False)
    s = eng.session(str(other), settings=ChatSettings(max_tokens=5))
    before = s.ask("hello").tokens
    with pytest.raises(UserError, match="does not fit base"):
        s.set_adapter(str(anon))
    s.set_adapter(None)
    assert s.ask("hello").tokens == before and cache.loads == 1
    with pytest.raises(UserError, match="no model given"):
        eng.session()
    with pytest.raises(UserError, match="temperature"):
        eng.session(str(other), settings=ChatSettings(temperature=-1))


# -- CLaRa -------------------------------------------------------------------------------------
DOCS = ["Alia built the river mill in 1790.", "Borun painted a glass tower in 1801.",
        "Cetra sold the salt mine in 1822."]


def test_clara_run_answers_from_compressed_documents(env, tiny_model_dir):
    from clara.method import checkpoint
    from clara.method.inference import answer_from_docs
    from clara.runs import create_run

    ws, _, _, cache, root = env
    run = create_run(ws, "clara-stage2", {"model": str(tiny_model_dir)},
                     resolved={"model": str(tiny_model_dir)})
    make_clara_checkpoint(run.adapters / "best", tiny_model_dir, "stage2", top_k=2)
    eng = ChatEngine(ws, cache=cache)
    s = eng.session(adapter=run.id, documents=DOCS[:2], doc_ids=["mill", "tower"],
                    settings=ChatSettings(max_tokens=10))
    assert s.is_clara and s.adapter.kind == "clara"
    reply = s.ask(Q)
    # what the method's own API answers from the same documents, on a fresh load
    fresh = checkpoint.load(run.adapters / "best", inference=True)
    assert reply.raw.strip() == answer_from_docs(fresh, Q, DOCS[:2], max_tokens=10)
    assert reply.prompt_tokens == len(fresh.prompt_ids(Q, 2))  # memory slots, not doc text
    assert reply.documents == ["mill", "tower"] and reply.generation_tokens > 0
    row = eng.log.read()[-1]
    assert row["kind"] == "clara" and row["documents"] == ["mill", "tower"]
    # per-question documents replace the attached ones
    assert s.ask(Q, documents=DOCS[1:]).documents == ["0", "1"]
    # a pool compressed once; each question picks from it
    s.attach(DOCS, ["mill", "tower", "mine"])
    picked = s.ask(Q, select=[0, 1])
    assert picked.raw == reply.raw and picked.documents == ["mill", "tower"]
    with pytest.raises(UserError, match="select: indices must be in 0..2"):
        s.ask(Q, select=[3])
    bare = eng.session(adapter=run.id)
    with pytest.raises(UserError, match="answers from documents"):
        bare.ask(Q)


def test_clara_stage3_retrieves_top_k_through_the_engine(env, tiny_model_dir, tmp_path):
    ckpt = make_clara_checkpoint(tmp_path / "s3", tiny_model_dir, "stage3", top_k=1)
    eng = ChatEngine(None, cache=env[3], log=False)
    s = eng.session(str(tiny_model_dir), adapter=str(ckpt), documents=DOCS,
                    doc_ids=["a", "b", "c"], settings=ChatSettings(max_tokens=4))
    reply = s.ask("Who painted the glass tower?")
    assert len(reply.retrieved) == 1 and reply.documents == [["a", "b", "c"][reply.retrieved[0]]]


# -- CLI ---------------------------------------------------------------------------------------
def test_chat_cli_one_answer_json_and_interactive_loop(env, tiny_model_dir):
    from click.testing import CliRunner

    from clara.chat.log import ChatLog
    from clara.cli import cli as clara_cli

    ws, a, b, _, _ = env
    run = lambda *args, input=None: CliRunner().invoke(  # noqa: E731
        clara_cli, ["--root", str(ws.root), "-w", ws.name, "chat", *args], input=input)
    before = len(ChatLog(ws.chats_dir).read())
    r = run("-m", str(tiny_model_dir), "-a", str(a), "-p", Q, "--max-tokens", "5",
            "--format", "json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert rec["adapter"] == str(a) and rec["generation_tokens"] <= 5 and rec["prompt"] == Q
    # a memory: a QA file's pairs, the plain model given the BM25 top-k for the prompt
    memory = ws.root / "memory.jsonl"
    io.write_jsonl(memory, [{"question": q, "answer": a} for q, a in PAIRS])
    r = run("-m", str(tiny_model_dir), "-p", Q, "--max-tokens", "3", "--memory", str(memory),
            "--top-k", "2", "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["documents"] == ["memory:1", "memory:2"]
    r = run("-m", str(tiny_model_dir), "-p", Q, "--max-tokens", "3")
    assert r.exit_code == 0 and "tok/s" in r.output and "peak" in r.output
    r = run("-m", str(tiny_model_dir), "--max-tokens", "3", "--single-turn",
            input=f"{Q}\n/adapter {b}\n{Q}\n/adapter none\n/reset\n/quit\n")
    assert r.exit_code == 0, r.output
    assert f"(adapter: {b})" in r.output and "(adapter: none)" in r.output
    rows = ChatLog(ws.chats_dir).read()[before:]
    assert [row["adapter"] for row in rows] == [str(a), None, None, None, str(b)]
    assert rows[-1]["settings"]["multi_turn"] is False
    r = run("-a", "no-such-run", "-p", Q)
    assert r.exit_code == 1 and "no run 'no-such-run'" in r.output and "Traceback" not in r.output


# -- memory ------------------------------------------------------------------------------------
PAIRS = [("Who built the river mill?", "Alia built it in 1790."),
         ("When was the river mill rebuilt?", "The mill was rebuilt in 1850."),
         ("Who painted the glass tower?", "Borun painted it."),
         ("Who sold the salt mine?", "Cetra sold it in 1822.")]


def test_a_plain_model_gets_the_bm25_top_k_of_many_documents(env, tiny_model_dir):
    """More attached documents than top_k: the prompt holds the top k BM25 ranks for it (it
    held all of them), k from the settings, else 3; fewer documents all go in."""
    from clara.chat.engine import RAG_TOP_K, rag_prompt
    from clara.chat.memory import memory_entry

    eng = ChatEngine(None, cache=env[3], log=False)
    docs = [memory_entry(q, a) for q, a in PAIRS]
    s = eng.session(str(tiny_model_dir), documents=docs, doc_ids=list("abcd"),
                    settings=ChatSettings(max_tokens=1, multi_turn=False, top_k=1))
    assert s.ask("Who painted the tower?").documents == ["c"]
    assert s.history == [] and RAG_TOP_K == 3
    s.settings.top_k = None
    assert s.ask("the salt mine").documents[0] == "d" and len(s.last.documents) == 3
    s.settings.multi_turn = True
    s.ask("Who sold the salt mine?", documents=docs[:2])  # per question: 2 <= 3, both go in
    assert s.last.documents == ["0", "1"]
    assert s.history[0]["content"] == rag_prompt("Who sold the salt mine?", docs[:2])


def test_sft_memory_rows_answer_from_the_top_k_pairs_with_their_own(tmp_path, tiny_model_dir):
    """`data build sft --memory-k 2`: each train pair once more, its prompt the two pairs BM25
    ranks first for its question (its own among them, as chat and eval render them)."""
    from click.testing import CliRunner

    from clara.chat.engine import rag_prompt
    from clara.chat.memory import memory_entry, memory_rows
    from clara.cli import cli as clara_cli
    from clara.data.builders import QAItem

    ws = Workspace(tmp_path, "mem").create()
    qa = tmp_path / "qa.jsonl"
    io.write_jsonl(qa, [{"question": q, "answer": a} for q, a in PAIRS])
    r = CliRunner().invoke(clara_cli, ["--root", str(tmp_path), "-w", "mem", "data", "build",
                                       "sft", "m-sft", "--qa", str(qa), "--no-general",
                                       "--valid-share", "0.25", "--memory-k", "2"])
    assert r.exit_code == 0, r.output
    rows = io.read_jsonl(ws.datasets_dir / "m-sft" / "train.jsonl")
    memory = [r for r in rows if r["origin"] == "memory"]
    assert len(rows) == 6 and len(memory) == 3  # 3 train pairs closed-book, 3 from memory
    for row in memory:
        prompt, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        q = prompt.rsplit("Question: ", 1)[1].split("\n")[0]
        assert memory_entry(q, answer) in prompt and prompt.count("\n[") == 2
    # its own pair put in when BM25 ranks it below k
    items = [QAItem(q, a) for q, a in PAIRS]
    row = memory_rows(items[:1], 1, [items[1], items[0]])[0]
    assert row["messages"][0]["content"] == rag_prompt(PAIRS[0][0], [memory_entry(*PAIRS[0])])
    r = CliRunner().invoke(clara_cli, ["--root", str(tmp_path), "-w", "mem", "data", "build",
                                       "sft", "bad", "--qa", str(qa), "--memory-k", "-1"])
    assert r.exit_code == 1 and "--memory-k must be >= 0" in r.output
    assert not (ws.datasets_dir / "bad").exists()
    # evaluation: `memory` answers with the memory's top-k pairs in the prompt, and needs one
    args = ["--root", str(tmp_path), "-w", "mem", "eval", "-d", str(qa), "-m",
            str(tiny_model_dir), "-c", "memory", "--limit", "1", "--max-tokens", "1",
            "--top-k", "2"]
    r = CliRunner().invoke(clara_cli, args)
    assert r.exit_code == 2 and "needs a QA dataset" in r.output and not ws.items("evals")
    r = CliRunner().invoke(clara_cli, args + ["--memory", str(qa), "--name", "m"])
    assert r.exit_code == 0, r.output
    result = io.read_jsonl(ws.path / "evals" / "m" / "results.jsonl")[0]
    assert result["config"] == "memory" and result["retrieved"] == [0, 1]
