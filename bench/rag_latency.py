"""Raw-text RAG against CLaRa compressed documents: same model, same questions, same documents.

For each question the BM25 top-k chunks of the documents are given to the model twice: as raw
text pasted into the prompt, and as CLaRa memory vectors (every chunk compressed once, up front,
as an offline index would be). Both go through clara's chat engine (greedy, reasoning banned).
Reported per mode: prompt tokens, time to first token, total latency, generated tokens; and the
raw / CLaRa ratios. A table is printed and JSON written under bench/results/.

    python bench/rag_latency.py                         # builds a small model on the handbook
    python bench/rag_latency.py --model M --clara CKPT  # your model and CLaRa checkpoint
    python bench/rag_latency.py --top-k 5 --doc-tokens 256 --hidden 2048 --layers 16  # 1B shapes

Without --clara a fresh (untrained) CLaRa checkpoint of the model is made: its answers mean
nothing, but its prompt and timing are exactly those of a trained one of the same geometry.

Measured on the lent H200 (nvidia-h200-x2, one GPU, mlx 0.32.4 CUDA, session 8; `CUDA_VISIBLE_
DEVICES=0 bash scripts/gpu-check.sh rag`, i.e. --top-k 5 --doc-tokens 256 --compression-rate 16
--hidden 2048 --layers 16 --limit 4 --max-tokens 32), the reference already on the engine's
own prompt ids in the same order (before: one fixed prompt, its warm third run), first lease
(the chat engine's ban through mlx-lm's logits processor):

    mode              prompt tok  ttft s   total s  gen tok  s/tok
    ----------------  ----------  -------  -------  -------  --------
    raw-text RAG      968.2       0.06586  0.1581   32       0.002976
    CLaRa compressed  203         0.1064   0.5416   32       0.01404
    raw / CLaRa: prompt_tokens 4.77x, ttft 0.62x, latency 0.29x, decode_s_per_token 0.21x
    decode: chat engine 364.5 tok/s, mlx_lm.generate 496.7 tok/s on the same model and prompt token ids (0.73x)
    decode                 prompt tok  ttft s   gen tok  tok/s
    ---------------------  ----------  -------  -------  -----
    raw-text RAG           968.2       0.06586  32       364.5
    mlx_lm.generate        968.2       0.0313   32       496.7
    mlx_lm.generate + ban  968.2       0.03822  32       311.2
      raw-text RAG: tok/s per prompt [409.9, 397.2, 407.0, 243.8]
      mlx_lm.generate: tok/s per prompt [546.1, 463.6, 491.2, 485.9]
      mlx_lm.generate + ban: tok/s per prompt [313.2, 308.2, 311.7, 311.6]

second lease (the engine's ban through its sampler, clara.chat.engine.biased_sampler):

    raw-text RAG      968.2       0.06242  0.1455   32       0.002681
    CLaRa compressed  203         0.08372  0.3886   32       0.009836
    raw / CLaRa: prompt_tokens 4.77x, ttft 0.75x, latency 0.37x, decode_s_per_token 0.27x
    decode: chat engine 394.5 tok/s, mlx_lm.generate 495.4 tok/s on the same model and prompt token ids (0.80x)
    raw-text RAG           968.2       0.06242  32       394.5
    mlx_lm.generate        968.2       0.03032  32       495.4
    mlx_lm.generate + ban  968.2       0.03037  32       489.9
      raw-text RAG: tok/s per prompt [424.9, 426.6, 428.2, 298.3]
      mlx_lm.generate: tok/s per prompt [500.9, 481.0, 501.5, 498.1]
      mlx_lm.generate + ban: tok/s per prompt [493.4, 470.0, 498.3, 498.1]

What they say. On the same prompts the gap is 0.73-0.80x (0.56x before, against one warm
prompt). The processor's cost did not repeat (311 then 490 tok/s). Found after the last lease:
the two decoded in different dtypes. The engine loads a model in the platform's dtype (bfloat16
on a GPU), mlx_lm.load keeps the files' (float32 for the model built here), so the reference
now casts its model to the engine's dtype (`dtype` in the JSON); not yet run on the GPU. On
this CPU both are float32, where the engine decoded at 0.99x.

Third lease (coordinator, one H200, the reference cast to the engine's bfloat16):

    raw-text RAG      968.2       0.07292  0.1667   32       0.003026
    CLaRa compressed  203         0.1088   0.5593   32       0.01453
    raw / CLaRa: prompt_tokens 4.77x, ttft 0.67x, latency 0.30x, decode_s_per_token 0.21x
    decode: chat engine 355.6 tok/s, mlx_lm.generate 272.3 tok/s on the same model (bfloat16) and prompt token ids (1.31x)
    raw-text RAG           968.2       0.07292  32       355.6
    mlx_lm.generate        968.2       0.0192   32       272.3
    mlx_lm.generate + ban  968.2       0.0146   32       385.9
      raw-text RAG: tok/s per prompt [322.2, 413.0, 428.1, 259.1]
      mlx_lm.generate: tok/s per prompt [273.9, 270.7, 272.7, 272.0]
      mlx_lm.generate + ban: tok/s per prompt [392.9, 390.4, 377.8, 382.5]

In the same dtype the engine is not slower than mlx_lm: 1.31x the plain reference and 0.92x
the reference with the same ban. The two references differ by 1.4x between themselves (the
plain one runs first), so one lease cannot settle 0.95. In every lease the engine's fourth
prompt decodes slower than its other three (244, 298, 259 tok/s) and mlx_lm's does not: not
yet explained.

Session 9 (nvidia-h200-x2, one GPU, the same shapes with 64 tokens a prompt; `CUDA_VISIBLE_
DEVICES=0 RAG_ARGS="--max-tokens 64 --rounds 3" bash scripts/gpu-check.sh rag`). The decode
comparison now warms every prompt once for every runner, then runs 3 timed rounds of the 4
prompts per runner, interleaved in a rotating order (the code of that lease printed the median;
the best, now the headline, is taken here from the per-prompt figures it printed):

    raw-text RAG      968.2       0.05864  0.202    64       0.002276
    CLaRa compressed  203         0.07686  0.7281   64       0.01034
    raw / CLaRa: prompt_tokens 4.77x, ttft 0.76x, latency 0.28x, decode_s_per_token 0.22x
    decode (bfloat16; every prompt once untimed, then 3 interleaved rounds; tok/s the median over rounds and prompts): chat engine 437.4, mlx_lm.generate 262.6 (1.67x), mlx_lm.generate + ban 257.1 (1.70x)
      chat engine: round means [446.8, 324.6, 356.9]; per prompt [463.6, 440.9, 446.4, 436.2, 248.4, 307.9, 485.1, 257.1, 254.4, 287.9, 446.8, 438.6]
      mlx_lm.generate: round means [259.1, 260.9, 460.5]; per prompt [263.3, 255.4, 256.2, 261.6, 252.9, 276.8, 261.9, 251.9, 449.3, 477.2, 477.9, 437.6]
      mlx_lm.generate + ban: round means [251.6, 313.7, 321.1]; per prompt [251.7, 246.8, 259.2, 248.6, 255.0, 452.4, 303.6, 243.9, 247.6, 261.3, 374.4, 401.1]

    best tok/s: chat engine 485.1, mlx_lm.generate 477.9 (1.02x), + ban 452.4 (1.07x)
    in the fast state (> 400 tok/s): engine 451.1 (7 prompts), mlx_lm 460.5 (4): 0.98x
    in the slow state (< 320 tok/s): engine 271.1 (5 prompts), mlx_lm 260.0 (8): 1.04x

What it says. The machine decodes this 1B model in two states, ~250-310 and ~440-485 tok/s,
and switches between them over seconds whatever runs: mlx_lm's plain runs sat in the slow one
for two rounds and in the fast one for the third; the engine's first round was all fast. Any
median or mean is then a count of which runner the fast state happened to fall on (hence 1.31x
and 0.92x last session, 1.67x here). Compared within a state, or best against best, the chat
engine decodes at 0.98-1.04x mlx_lm.generate and 1.07x its run with the same ban: >= 0.95x.
The engine's slow fourth prompt of earlier leases did not come back once every prompt had been
decoded once before the timing (each new prompt length builds kernels and graphs on CUDA, and the
engine used to run first): it was the warm-up, not the engine. The two states were not
explained (GPU clocks at this small kernel size are a guess, not measured).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"


def build_model(out: Path, text: str, hidden: int, layers: int) -> Path:
    from clara.data.chunking import split_sentences
    from clara.models.tiny import TinyConfig, build_tiny_model

    if not out.exists():
        sentences = split_sentences(text) or [text]
        cfg = TinyConfig(hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=max(4, hidden // 64),
                         vocab_size=1024)
        build_tiny_model(out, sentences * 4, cfg)
    return out


def fresh_clara(out: Path, model: str, doc_tokens: int, rate: int, top_k: int) -> Path:
    from clara.method import checkpoint
    from clara.method.config import ClaraConfig
    from clara.method.model import ClaraModel

    if not (out / "clara_config.json").is_file():
        cfg = ClaraConfig(base_model=model, stage="stage2", doc_max_tokens=doc_tokens,
                          compression_rate=rate, top_k=top_k, lora_dropout=0.0)
        checkpoint.save(ClaraModel.from_base(cfg), out)
    return out


def measure(session, questions, hits, label) -> dict:
    rows = []
    session.ask(questions[0], select=hits[0])  # warm-up: first call pays for compilation
    for q, h in zip(questions, hits):
        r = session.ask(q, select=h)
        rows.append({"prompt_tokens": r.prompt_tokens, "ttft": r.ttft, "latency": r.latency,
                     "generation_tokens": r.generation_tokens,
                     "generation_tps": r.generation_tps, "peak_memory": r.peak_memory})
    return summarize(rows, label)


def summarize(rows: list[dict], label: str) -> dict:
    out = {"mode": label, "questions": len(rows)}
    for k in rows[0]:
        out[k] = statistics.mean(r[k] for r in rows)
    out["decode_s_per_token"] = statistics.mean(
        (r["latency"] - r["ttft"]) / max(1, r["generation_tokens"] - 1) for r in rows)
    out["per_prompt_tps"] = [round(r["generation_tps"], 1) for r in rows]
    return out


def engine_decode(session, questions, hits):
    """One pass of the chat engine over every question: its rows (see measure)."""
    rows = []
    for q, h in zip(questions, hits):
        r = session.ask(q, select=h)
        rows.append({"prompt_tokens": r.prompt_tokens, "ttft": r.ttft, "latency": r.latency,
                     "generation_tokens": r.generation_tokens,
                     "generation_tps": r.generation_tps, "peak_memory": r.peak_memory})
    return rows


def mlx_lm_decoder(model: str, logit_bias: dict | None = None, dtype: str | None = None):
    """mlx_lm.stream_generate (greedy) as a function of prompt token ids -> rows: the reference
    for the chat engine's decode, run on the very prompt ids the engine was given. With
    `logit_bias` the engine's ban of the reasoning tokens is applied too (mlx-lm's own
    processor), to tell its cost from the engine's. `dtype`: the weights' dtype the engine ran
    in (clara loads a model in the platform's dtype, bfloat16 on a GPU; mlx_lm.load keeps the
    files', float32 for the model built here: the two decoded in different dtypes before)."""
    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_logits_processors

    from clara.models.loading import cast_model

    m, tok = load(model)
    if dtype:
        cast_model(m, dtype)
        mx.eval(m.parameters())
    procs = make_logits_processors(logit_bias=logit_bias) if logit_bias else None

    def run(prompts: list[list[int]], max_tokens: int) -> list[dict]:
        rows = []
        for ids in prompts:
            tic, ttft, last = time.perf_counter(), 0.0, None
            for last in stream_generate(m, tok, ids, max_tokens=max_tokens,
                                        logits_processors=procs):
                ttft = ttft or time.perf_counter() - tic
            rows.append({"prompt_tokens": last.prompt_tokens, "ttft": ttft,
                         "latency": time.perf_counter() - tic,
                         "generation_tokens": last.generation_tokens,
                         "generation_tps": last.generation_tps,
                         "peak_memory": last.peak_memory})
        return rows

    return run


def decode_rounds(runners: dict, rounds: int) -> dict:
    """Every runner (name -> function of no arguments returning one pass's rows) once over
    every prompt untimed (on CUDA each new prompt length builds kernels and graphs: before, the
    engine ran first and paid for them, the references after it did not), then `rounds` timed
    passes each, interleaved and in a rotating order so that a drift of the machine falls on
    all alike. Per runner: the best and the median tokens/s over every (round, prompt), the
    mean of each round, and the per-prompt figures. The best is the headline: on the H200 the
    machine switches between two decode speeds (the module doc), so a median says which runner
    the fast state fell on."""
    names = list(runners)
    for n in names:
        runners[n]()
    rows = {n: [] for n in names}
    per_round = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            got = runners[n]()
            rows[n] += got
            per_round[n].append(round(statistics.mean(x["generation_tps"] for x in got), 1))
    return {n: {"mode": n, "median_tps": statistics.median(x["generation_tps"] for x in rows[n]),
                "best_tps": max(x["generation_tps"] for x in rows[n]),
                "round_means": per_round[n],
                "per_prompt_tps": [round(x["generation_tps"], 1) for x in rows[n]],
                "prompt_tokens": statistics.mean(x["prompt_tokens"] for x in rows[n]),
                "generation_tokens": statistics.mean(x["generation_tokens"] for x in rows[n])}
            for n in names}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="mlx-lm model folder (default: build a small one)")
    p.add_argument("--clara", help="CLaRa checkpoint of that model (default: a fresh one)")
    p.add_argument("--docs", default=str(REPO / "data/sample/karsholm_observatory_handbook.md"))
    p.add_argument("--questions", default=str(REPO / "data/eval_questions.jsonl"))
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--doc-tokens", type=int, default=128,
                   help="Chunk size in model tokens (= CLaRa's doc_max_tokens).")
    p.add_argument("--compression-rate", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256, help="Width of the built model.")
    p.add_argument("--layers", type=int, default=4, help="Blocks of the built model.")
    p.add_argument("--rounds", type=int, default=3,
                   help="Timed decode passes over every prompt, per runner (interleaved).")
    args = p.parse_args(argv)

    from clara.chat.engine import ChatEngine, ChatSettings
    from clara.chat.models import ModelCache, adapter_at
    from clara.data.builders import Document, chunk_documents
    from clara.data.chunking import HFTokenizer
    from clara.evaluation.qa import read_qa_file
    from clara.evaluation.rag import ChunkIndex
    from clara.platform import describe

    RESULTS.mkdir(parents=True, exist_ok=True)
    text = Path(args.docs).read_text(encoding="utf-8")
    model = args.model or str(build_model(RESULTS / f"model-h{args.hidden}-l{args.layers}", text,
                                          args.hidden, args.layers))
    rate_tag = f"d{args.doc_tokens}-r{args.compression_rate}-k{args.top_k}"
    clara = args.clara or str(fresh_clara(RESULTS / f"clara-fresh-{Path(model).name}-{rate_tag}",
                                          model, args.doc_tokens, args.compression_rate,
                                          args.top_k))
    from transformers import AutoTokenizer

    counter = HFTokenizer(AutoTokenizer.from_pretrained(model), Path(model).name)
    # CLaRa keeps doc_max_tokens tokens of a document (with its own special tokens around
    # them): chunks a little shorter, so both modes see the same text.
    chunks = chunk_documents([Document("docs", text)], counter, args.doc_tokens - 8, 0)
    index = ChunkIndex.from_chunks(chunks)
    questions = [r.question for r in read_qa_file(args.questions, args.limit)]
    hits = [index.search(q, args.top_k) for q in questions]

    engine = ChatEngine(None, cache=ModelCache(max_entries=2), log=False)
    settings = ChatSettings(max_tokens=args.max_tokens, ban_thinking=True, multi_turn=False)
    raw = engine.session(model, settings=settings, documents=index.texts,
                         doc_ids=[c.id for c in chunks])
    compressed = engine.session(model, adapter=adapter_at(Path(clara)), settings=settings)
    tic = time.perf_counter()
    compressed.attach(index.texts, [c.id for c in chunks])
    compress_s = time.perf_counter() - tic

    modes = [measure(raw, questions, hits, "raw-text RAG"),
             measure(compressed, questions, hits, "CLaRa compressed")]
    a, b = modes
    ratios = {k: (a[k] / b[k] if b[k] else None)
              for k in ("prompt_tokens", "ttft", "latency", "decode_s_per_token")}
    # the decode comparison: the raw mode's prompts, the same token ids for every runner
    from clara.chat.engine import rag_prompt
    from clara.chat.reasoning import ban_bias

    prompts = [raw.prompt_ids(rag_prompt(q, [index.texts[i] for i in h]))
               for q, h in zip(questions, hits)]
    dtype = None if raw.entry.loaded.quantization else raw.entry.loaded.dtype
    runners = {"chat engine": lambda: engine_decode(raw, questions, hits)}
    plain = mlx_lm_decoder(model, dtype=dtype)
    runners["mlx_lm.generate"] = lambda: plain(prompts, args.max_tokens)
    ban = ban_bias(raw.markers)
    if ban:
        banned = mlx_lm_decoder(model, ban, dtype=dtype)
        runners["mlx_lm.generate + ban"] = lambda: banned(prompts, args.max_tokens)
    dec = decode_rounds(runners, args.rounds)
    eng, ref = dec["chat engine"], dec["mlx_lm.generate"]
    result = {"model": model, "clara": clara, "platform": describe(), "chunks": len(chunks),
              "top_k": args.top_k, "doc_tokens": args.doc_tokens,
              "compression_rate": args.compression_rate, "max_tokens": args.max_tokens,
              "compress_all_chunks_s": compress_s, "modes": modes,
              "ratios_raw_over_clara": ratios, "decode": dec, "rounds": args.rounds,
              "dtype": dtype, "decode_vs_mlx_lm": eng["best_tps"] / ref["best_tps"],
              "decode_vs_mlx_lm_median": eng["median_tps"] / ref["median_tps"]}
    if "mlx_lm.generate + ban" in dec:
        result["decode_vs_mlx_lm_ban"] = eng["best_tps"] / dec["mlx_lm.generate + ban"]["best_tps"]

    cols = [("mode", "mode"), ("prompt_tokens", "prompt tok"), ("ttft", "ttft s"),
            ("latency", "total s"), ("generation_tokens", "gen tok"),
            ("decode_s_per_token", "s/tok")]
    from clara.cli.common import render_table

    print(f"{len(questions)} questions, top-{args.top_k} of {len(chunks)} chunks of "
          f"{args.doc_tokens} tokens, {Path(model).name}; CLaRa n_mem "
          f"{args.doc_tokens // args.compression_rate} per document")
    print(render_table(modes, cols))
    print("raw / CLaRa: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items() if v))
    print(f"compressing all {len(chunks)} chunks once: {compress_s:.2f}s")
    print(f"decode ({dtype or 'quantized'}; every prompt once untimed, then {args.rounds} "
          f"interleaved rounds; tok/s the best of every round and prompt): chat engine "
          f"{eng['best_tps']:.1f}, mlx_lm.generate {ref['best_tps']:.1f} "
          f"({result['decode_vs_mlx_lm']:.2f}x)"
          + (f", mlx_lm.generate + ban {dec['mlx_lm.generate + ban']['best_tps']:.1f} "
             f"({result['decode_vs_mlx_lm_ban']:.2f}x)" if "decode_vs_mlx_lm_ban" in result
             else ""))
    print(render_table(list(dec.values()), [("mode", "decode"), ("prompt_tokens", "prompt tok"),
                                            ("generation_tokens", "gen tok"),
                                            ("best_tps", "best tok/s"),
                                            ("median_tps", "median tok/s")]))
    for r in dec.values():
        print(f"  {r['mode']}: round means {r['round_means']}; per prompt {r['per_prompt_tps']}")
    out = RESULTS / f"rag_latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    main()
