"""The three CLaRa training stages as TrainTasks (clara/train/protocol.py), registered as run kinds
"clara-stage1", "clara-stage2" and "clara-stage3".

Rows are clara-method §3's JSONL formats. Stage 1: {"data_type": "qa", "question": [..],
"answers": [..], "docs": [doc]} or {"data_type": "paraphrase", "answers": [text], "docs": [doc]};
stage 2: {"question", "docs" (exactly top_k), "answer" | "answers" | "golden_answers"};
stage 3: {"question", "docs" (N candidates, N >= top_k), answer as stage 2, "pos_index"
(optional, metrics and the optional retrieval loss only)}.
"""

from __future__ import annotations

import random
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from clara.data.formats import parse_stage_row, read_stage_rows
from clara.errors import UserError
from clara.method import checkpoint, prompts
from clara.method.config import ClaraTrainConfig  # noqa: F401 (the run config)
from clara.method.model import ClaraModel

# the most memory stage 3's cache of candidate vectors takes (512 MiB: 65k documents of 8 vectors
# of 256 floats); documents past it are compressed each time they come
CANDIDATE_CACHE_BYTES = 1 << 29
# stage3_negatives = pool: at most this many training documents (an even sample of them; the
# batch's own candidates are then added to it)
POOL_MAX = 8192


# ---------------------------------------------------------------------------- rows
def parse_row(row, stage: str, top_k: int, n_mem: int, path, line: int) -> dict:
    """One sample of a stage from a §3 row (clara.data.formats), or a located DataError."""
    return parse_stage_row(row, stage, top_k, path, line)


def read_rows(path: Path, stage: str, top_k: int, n_mem: int | None = None,
              state: dict | None = None) -> list[dict]:
    return read_stage_rows(path, stage, top_k, state)


# ---------------------------------------------------------------------------- task
class ClaraStageTask:
    """A TrainTask for one CLaRa stage over `model` and parsed samples."""

    compile_step = True

    def __init__(self, model: ClaraModel, train: list[dict], valid: list[dict] | None = None,
                 batch_size: int = 2, train_path: str | Path | None = None):
        self.model = model
        self.stage = model.config.stage
        self.kind = f"clara-{self.stage}"
        if not train:
            raise UserError(f"{train_path or 'train'}: no training rows")
        self.batch_size = batch_size
        self._train, self._valid = train, valid or []
        self._train_groups = self._plan(self._train)
        self._cache: dict = {}
        # stage 3 never trains the compressor; unless it trains the memory rows (which the
        # compressor reads too) a candidate's vectors never change: they are computed once per
        # unique document, outside the training step (_candidate_vectors)
        self.cache_candidates = self.stage == "stage3" and not model.config.trains_memory_rows()
        # stage 2 with the compressor frozen (stage2_train = generator) likewise, when it has
        # no dropout (with dropout each step's vectors differ, as before): its documents cost a
        # third of the step (the demo's stage 2 on the CPU: 180 of 540 ms). Its loss is then
        # the CE alone: a frozen compressor's MSE is a constant that trains nothing
        cfg = model.config
        self.cache_documents = (self.stage == "stage2" and not cfg.trains_memory_rows()
                                and "compressor" not in cfg.trained_adapters()
                                and cfg.lora_dropout == 0)
        self._doc_vectors: dict[str, mx.array] = {}
        self._doc_bytes = 0
        self._pool = None  # stage3_negatives = pool: (documents, their index, their vectors)
        if (self.stage == "stage3" and model.config.stage3_negatives == "pool"
                and not self.cache_candidates):
            raise UserError("stage3_negatives: pool needs the memory rows frozen in stage 3 "
                            "(stage3_train without memory): the pool's vectors are computed "
                            "once")
        # stage 3 validates its start (stage 2's generator, the query reasoner as the compressor):
        # a stage 3 that helps nothing hands over that start as its best checkpoint
        self.validate_at_start = self.stage == "stage3" and bool(self._valid)
        # stage 2 aligns each question's compressed vectors with its documents' (stage2_align)
        # while the compressor trains
        self.align = (self.stage == "stage2" and model.config.stage2_align > 0
                      and "compressor" in model.config.trained_adapters())
        self.center = self._decide_center()
        if self.stage == "stage3":
            # best/ by exact answers with the documents it picks plus recall@top_k (the start
            # wins ties); the other stages by validation loss
            self.best_metric = ("em_recall", "max")

    def _decide_center(self) -> dict | None:
        """retrieval_center's value for this run (stages 2 and 3 score retrieval): `auto`
        decides from how alike the compressor makes the training documents (clara/method/
        retrieval.py) and the model's config keeps the decision, which its checkpoint hands
        to stage 3 (build_task). Measured before the first step: no random numbers drawn."""
        c = self.model.config
        if self.stage == "stage1":
            return None
        if c.retrieval_center != "auto":
            return {"setting": c.retrieval_center, "value": c.retrieval_center}
        import logging

        from clara.method.retrieval import center_line, decide_center

        d = decide_center(self.model, [doc for s in self._train for doc in s["docs"]])
        c.retrieval_center = d["value"]
        logging.getLogger("clara.train").info("retrieval_center: %s", center_line(d))
        return d

    @classmethod
    def from_files(cls, model: ClaraModel, data_dir: str | Path, batch_size: int = 2):
        data_dir = Path(data_dir)
        train_file, valid_file = data_dir / "train.jsonl", data_dir / "valid.jsonl"
        if not train_file.is_file():
            raise UserError(f"{data_dir}: no train.jsonl")
        c, state = model.config, {}  # train and valid rows agree on their document count
        train = read_rows(train_file, c.stage, c.top_k, state=state)
        valid = read_rows(valid_file, c.stage, c.top_k, state=state) if valid_file.is_file() \
            else []
        return cls(model, train, valid, batch_size, train_path=train_file)

    def _plan(self, samples: list[dict]) -> dict[int, list[int]]:
        """Sample indices grouped by candidate count (a stage-3 batch needs one N)."""
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(len(s["docs"]), []).append(i)
        return groups

    def _chunks(self, groups: dict[int, list[int]], rng) -> list[list[int]]:
        out = []
        for n in sorted(groups):
            idx = list(groups[n]) if rng is None else list(rng.permutation(groups[n]))
            out += [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if rng is not None:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    # -- batches ---------------------------------------------------------------------------
    def _decoder_example(self, s: dict, rng: random.Random):
        m, n_mem = self.model, self.model.config.n_mem
        if s["kind"] == "qa":
            parts = prompts.scp_qa(n_mem, s["questions"], s["answers"])
        elif s["kind"] == "paraphrase":
            parts = prompts.scp_paraphrase(n_mem, s["answer"], rng)
        else:
            parts = prompts.rag_qa(n_mem, m.config.top_k, s["question"], s["answer"])
        if parts not in self._cache:
            self._cache[parts] = m.decoder_example(*parts)
        return self._cache[parts]

    def make_batch(self, samples: list[dict], rng: random.Random) -> dict[str, mx.array]:
        m, k = self.model, self.model.config.top_k
        dec = m.decoder_batch([self._decoder_example(s, rng) for s in samples], k)
        if self.stage != "stage3":
            docs = [d for s in samples for d in s["docs"]]
            out = {"doc_vecs": self._candidate_vectors(docs), **dec} if self.cache_documents \
                else {**m.encoder_batch(docs), **dec}
            if self.align:  # each question's positives: its row's gold documents in the batch
                # (pos_index), else all its row's documents. With k > 1 and every document a
                # positive, the distractors are positives too and nothing singles out the gold:
                # vectors all alike meet that loss at ln(B) (the lighthouse benchmark's stage 2,
                # bench/clara_stage3_study.py round five: ln 8 from step 50 to the end)
                pos = np.zeros((len(samples), len(docs)), dtype=np.bool_)
                first = np.cumsum([0] + [len(s["docs"]) for s in samples])
                for b, s in enumerate(samples):
                    pos[b, [first[b] + i for i in s.get("pos") or range(len(s["docs"]))]] = True
                out.update(m.encoder_batch([s["question"] for s in samples], prefix="q"),
                           positives=mx.array(pos))
            return out
        N = len(samples[0]["docs"])
        pos = np.zeros((len(samples), N), dtype=np.bool_)
        for b, s in enumerate(samples):
            pos[b, s["pos"]] = True
        docs = [d for s in samples for d in s["docs"]]
        cands = {"cand_vecs": self._candidate_vectors(docs)} if self.cache_candidates else \
            m.encoder_batch(docs, prefix="cand")
        return {**m.encoder_batch([s["question"] for s in samples], prefix="q"), **cands, **dec,
                "positives": mx.array(pos)}

    def _candidate_vectors(self, docs: list[str]) -> mx.array:
        """The frozen compressor's vectors [len(docs), n_mem, H] of stage-3 candidates (and of
        stage 2's documents, cache_documents), without dropout (a frozen compressor's vectors
        are its inference ones), each unique document compressed once while the cache holds
        under CANDIDATE_CACHE_BYTES."""
        from clara.method.inference import compress_documents

        m = self.model
        new = list(dict.fromkeys(d for d in docs if d not in self._doc_vectors))
        fresh = {}
        if new:
            was = m.training
            vecs = compress_documents(m, new, batch_size=32)  # sets eval mode: no dropout
            m.train(was)
            fresh = {d: vecs[i] for i, d in enumerate(new)}
            if self._doc_bytes + vecs.nbytes <= CANDIDATE_CACHE_BYTES:
                self._doc_vectors.update(fresh)
                self._doc_bytes += vecs.nbytes
        return mx.stack([self._doc_vectors.get(d, fresh.get(d)) for d in docs])

    def _with_negatives(self, batch: dict, samples: list[dict]) -> dict:
        """A stage-3 training batch with the negatives of its retrieval loss when
        config.stage3_negatives asks for more than each row's candidates: neg_pos [B, M] (True
        where a negative's text is one of the row's gold documents) and, for pool, neg_vecs
        [M, n_mem, H] (the model ranks against the batch's candidates when it has none)."""
        c = self.model.config
        if self.stage != "stage3" or c.stage3_negatives == "rows" or not c.retrieval_weight:
            return batch
        docs = [d for s in samples for d in s["docs"]]
        if c.stage3_negatives == "pool":
            if self._pool is None:
                pool = sorted({d for s in self._train for d in s["docs"]})
                capped = len(pool) > POOL_MAX
                if capped:
                    pool = [pool[i * len(pool) // POOL_MAX] for i in range(POOL_MAX)]
                self._pool = (pool, capped, self._candidate_vectors(pool))
            pool, capped, vecs = self._pool
            if capped:  # the batch's own candidates with the sample (a fixed shape)
                vecs = mx.concatenate([vecs, batch["cand_vecs"]])
            docs = pool + docs if capped else pool
            batch["neg_vecs"] = vecs
        where: dict[str, list[int]] = {}
        for i, d in enumerate(docs):
            where.setdefault(d, []).append(i)
        pos = np.zeros((len(samples), len(docs)), dtype=np.bool_)
        for b, s in enumerate(samples):
            for j in s["pos"]:
                pos[b, where.get(s["docs"][j], [])] = True
        batch["neg_pos"] = mx.array(pos)
        return batch

    def num_train_batches(self) -> int:
        return sum(-(-len(v) // self.batch_size) for v in self._train_groups.values())

    def train_batches(self, epoch: int, seed: int):
        rng = np.random.default_rng([seed, epoch])
        for i, chunk in enumerate(self._chunks(self._train_groups, rng)):
            # the paraphrase instruction of a batch depends on (seed, epoch, batch) alone
            samples = [self._train[j] for j in chunk]
            yield self._with_negatives(
                self.make_batch(samples, random.Random(seed * 1_000_003 + epoch * 10_007 + i)),
                samples)

    def train_shards(self, epoch: int, seed: int, rank: int, size: int):
        """Rank `rank`'s samples of every batch of train_batches (same order, same paraphrase
        draws), with the batch's loss counts; a rank left without samples gets the batch's first
        one at weight 0, so every rank takes each step."""
        rng = np.random.default_rng([seed, epoch])
        for i, chunk in enumerate(self._chunks(self._train_groups, rng)):
            r = random.Random(seed * 1_000_003 + epoch * 10_007 + i)
            parts = np.array_split(np.arange(len(chunk)), size)
            for j in chunk[:parts[rank][0]] if len(parts[rank]) else []:
                self._decoder_example(self._train[j], r)  # draw as one process would
            mine = [chunk[j] for j in parts[rank]]
            real = bool(mine)
            samples = [self._train[j] for j in (mine or chunk[:1])]
            batch = self._with_negatives(self.make_batch(samples, r), samples)
            yield batch, (self.loss_counts(batch) if real else
                          dict.fromkeys(self.loss_counts(batch), 0)), real

    def loss_counts(self, batch) -> dict[str, int]:
        """The normalisers of the batch's loss terms: CE tokens, MSE rows, questions (the
        retrieval metrics) and questions with a positive (the retrieval loss)."""
        rows = batch["positives"].size if self.stage == "stage3" else \
            (batch["doc_vecs"] if "doc_vecs" in batch else batch["enc_ids"]).shape[0]
        out = {"tokens": int((np.asarray(batch["labels"][:, 1:]) != -100).sum()),
               "rows": rows, "queries": batch["dec_ids"].shape[0]}
        if "positives" in batch:
            out["positives"] = int(np.asarray(batch["positives"]).any(axis=-1).sum())
        return out

    def shared_loss(self, model, batch, counts, totals):
        """This shard's part of the global batch's loss: each term of stage_loss weighted by
        the shard's share of that term's normaliser (summed over ranks: the global loss)."""
        _, n, ex = model.stage_loss(batch)
        share = {k: counts[k] / mx.maximum(totals[k], 1) for k in counts}
        # align: each rank's questions against its own shard's documents (fewer negatives than
        # the global batch's in one process)
        which = {"ce": "tokens", "mse": "rows", "retrieval": "positives", "align": "queries"}
        ex = {k: v * share[which.get(k, "queries")] for k, v in ex.items()}
        c = model.config
        if self.stage == "stage3":
            loss = ex["ce"] + (c.retrieval_weight * ex["retrieval"] if "retrieval" in ex else 0)
        else:
            loss = ex["ce"] + c.mse_weight * ex["mse"] if c.mse_weight and "mse" in ex \
                else ex["ce"]
            if "align" in ex:
                loss = loss + c.stage2_align * ex["align"]
        return loss, n, ex

    def valid_batches(self):
        for i, chunk in enumerate(self._chunks(self._plan(self._valid), None)):
            yield self.make_batch([self._valid[j] for j in chunk], random.Random(i))

    def loss(self, model: ClaraModel, batch):
        return model.stage_loss(batch)

    def batch_tokens(self, batch) -> int:
        # NumPy on the batch's (already evaluated) masks: an mx sum + .item() here would queue
        # behind the step just launched and wait for it, undoing the engine's step look-ahead
        keys = [k for k in batch if k.endswith("_mask")]
        return int(sum(np.asarray(batch[k]).sum() for k in keys))

    def save_weights(self, directory: Path) -> None:
        checkpoint.save(self.model, directory)

    def load_weights(self, directory: Path) -> None:
        checkpoint.load_into(self.model, directory, adapters=self.model.adapter_names())

    def doc_truncation(self) -> dict:
        """How doc_max_tokens cuts the training documents in the base's own tokens; logs a
        warning when it cuts any."""
        import logging

        from clara.data.chunking import HFTokenizer
        from clara.data.stats import doc_truncation, truncation_warning

        c = self.model.config
        t = doc_truncation(({"docs": s["docs"]} for s in self._train),
                           HFTokenizer(self.model.hf, "the base"), c.doc_max_tokens)
        line = truncation_warning(t, "the base")
        if line:
            logging.getLogger("clara.train").warning("documents cut: %s", line)
            t["warning"] = line
        return t

    def describe(self) -> dict:
        trainable = sum(v.size for _, v in tree_flatten(self.model.trainable_parameters()))
        c = self.model.config
        return {"model": c.base_model, "stage": c.stage, "n_mem": c.n_mem, "top_k": c.top_k,
                "adapters": self.model.adapter_names(),
                # fingerprints of the starting weights: a hand-off can be checked from events
                "adapter_digests": checkpoint.adapter_digests(self.model),
                "trained_adapters": list(c.trained_adapters()),
                "trainable_parameters": int(trainable), "train_rows": len(self._train),
                "valid_rows": len(self._valid), "train_batches": self.num_train_batches(),
                "doc_truncation": self.doc_truncation(),
                **({"retrieval_center": self.center} if self.center else {})}


def build_task(cfg: ClaraTrainConfig, stage: str, model_source: str | None = None,
               data_dir: str | Path | None = None) -> ClaraStageTask:
    """The task of a stage run: a fresh model on the base, or one continued from init_from."""
    source = model_source or cfg.model
    mx.random.seed(cfg.seed)
    inherited = None
    if cfg.init_from:
        lm = tok = None
        if source:
            from clara.models.loading import load_model

            loaded = load_model(source)
            lm, tok = loaded.model, loaded.tokenizer
        overrides = cfg.overrides(stage)
        if stage == "stage3" and overrides["retrieval_center"] == "auto":
            # stage 3 keeps the decision stage 2 made (its checkpoint's config), not a new one
            saved = checkpoint.read_meta(Path(cfg.init_from))["config"].get("retrieval_center")
            saved = {True: "on", False: "off"}.get(saved, saved)
            if saved in ("on", "off"):
                overrides["retrieval_center"] = inherited = saved
        model = checkpoint.load(cfg.init_from, stage=stage, lm=lm, tokenizer=tok,
                                overrides=overrides, seed=cfg.seed)
    else:
        if not source:
            raise UserError("model: is required")
        c = cfg.method_config(stage)
        c.base_model = source
        model = ClaraModel.from_base(c)
    task = ClaraStageTask.from_files(model, data_dir or cfg.data, cfg.batch_size)
    if inherited:
        task.center = {"setting": "auto", "value": inherited, "inherited": "stage 2's checkpoint"}
    return task


def _factory(stage: str):
    def factory(run_config: dict, run_dir: Path) -> ClaraStageTask:
        cfg = ClaraTrainConfig(**run_config["config"])
        cfg.validate()  # the check the CLI and the app ran, again on what run.toml holds
        resolved = run_config.get("resolved", {})
        return build_task(cfg, stage, resolved.get("model", cfg.model),
                          resolved.get("data", cfg.data))
    return factory


def register_kinds() -> None:
    from clara.train.tasks import register

    for stage in ("stage1", "stage2", "stage3"):
        register(f"clara-{stage}", _factory(stage))


register_kinds()
