"""A deterministic synthetic knowledge benchmark: made-up cities, firms and people.

Every entity has a few facts (a city: province, river, founding year; a firm: city, founding
year, product; a person: birth year, birth city, profession, employer, invention) rendered into
a short document (2-4 sentences) through one of several templates. Questions come in three
sorts: single-fact questions about one document, two-hop questions that need two documents
("In which city was the employer of X founded?"), and paraphrased forms of both.

Splits: a share of the people (`test_share` of all entities) is held out. Their documents and
questions appear only in the test splits, so a test row is always about an entity that training
never showed. Questions about the other entities are `train` in their original wording and
`valid` in their paraphrased wording (knowledge must transfer across wordings).

`build_synth` writes, under datasets/: NAME-docs, NAME-qa, NAME-cpt, NAME-sft, NAME-stage1,
NAME-stage2, NAME-stage3. The same arguments give byte-identical JSONL files: one seeded
`random.Random`, fixed iteration order, no time stamps in rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from clara.data.builders import BM25, QAItem, chat_row, retrieval_row, stage1_rows
from clara.data.datasets import check_new, write_datasets
from clara.errors import UserError, UsageError
from clara.workspace import Workspace

PARTS = ("docs", "qa", "cpt", "sft", "stage1", "stage2", "stage3")

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kl", "l", "m", "n", "p", "r", "s",
           "st", "t", "th", "v", "w", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "nd", "rk"]
PROFESSIONS = ["engineer", "chemist", "cartographer", "architect", "botanist", "clockmaker",
               "astronomer", "glassblower", "surveyor", "printer", "shipwright", "weaver"]
PRODUCTS = ["clocks", "glass lenses", "steam pumps", "silk cloth", "maps", "telescopes",
            "bicycles", "printing presses", "copper wire", "porcelain", "sailcloth", "compasses",
            "lamps", "paper", "bells", "barometers"]
_INV_ADJ = ["folding", "tidal", "silent", "twin", "spiral", "floating", "copper", "glass",
            "rotary", "hollow", "mirrored", "hinged", "self-winding", "pocket", "wind-driven"]
_INV_NOUN = ["lantern", "loom", "kettle", "compass", "pump", "sextant", "press", "clock",
             "ladder", "bellows", "telescope", "valve", "bridge", "sail", "stove", "lock"]
_INVENTIONS = len(_INV_ADJ) * len(_INV_NOUN)
_ORG_FORMS = ["the {} Company", "the {} Works", "{} and Sons", "the {} Guild", "{} Manufacturing"]

TEMPLATES = {
    "city": [
        "{name} is a city in the province of {province}. It was founded in {founded} on the "
        "river {river}.",
        "Founded in {founded}, {name} lies on the river {river}. The city belongs to the "
        "province of {province}.",
        "The river {river} runs through {name}, a city of {province}. {Name} was founded in "
        "{founded}.",
        "{Name} dates from {founded}. The city stands on the river {river} in the province of "
        "{province}.",
    ],
    "org": [
        "{Name} was founded in {founded} in {city}. {Name} makes {product}.",
        "Founded in {city} in {founded}, {name} is known for its {product}. Its goods were "
        "sold across the whole region.",
        "{Name} produces {product}. The firm was established in {founded}, and its home is "
        "{city}.",
        "In {founded}, {name} opened its first workshop in {city}. Its workers make {product}.",
    ],
    "person": [
        "{name} was born in {born} in {city}. {name} worked as {a_profession} for {employer}. "
        "{name} invented {invention}.",
        "Born in {city} in {born}, {name} became {a_profession}. At {employer}, {name} "
        "invented {invention}.",
        "{name} is remembered as the inventor of {invention}. {A_profession} by training, "
        "{name} was employed by {employer}. {name} was born in {born} in {city}.",
        "{name} ({born}) was {a_profession} from {city}. While working for {employer}, {name} "
        "created {invention}.",
    ],
}

# (fact, answer key, [original wording, paraphrased wording])
QUESTIONS = {
    "city": [
        ("founded", "founded", ["In which year was {name} founded?",
                                "When was the city of {name} founded?"]),
        ("province", "province", ["In which province is {name}?",
                                  "{Name} belongs to which province?"]),
        ("river", "river", ["On which river does {name} lie?",
                            "Which river runs through {name}?"]),
    ],
    "org": [
        ("founded", "founded", ["In which year was {name} founded?",
                                "When was {name} established?"]),
        ("city", "city", ["In which city was {name} founded?", "Where is {name} based?"]),
        ("product", "product", ["What does {name} make?", "What are the products of {name}?"]),
    ],
    "person": [
        ("born", "born", ["In which year was {name} born?", "What is the birth year of {name}?"]),
        ("city", "city", ["In which city was {name} born?", "What is the home town of {name}?"]),
        ("profession", "profession", ["What was the profession of {name}?",
                                      "What did {name} work as?"]),
        ("employer", "employer", ["Which company employed {name}?",
                                  "For which firm did {name} work?"]),
        ("invention", "invention", ["What did {name} invent?",
                                    "Which invention is credited to {name}?"]),
    ],
}
# person -> (via fact, target entity type, target fact, wordings)
TWO_HOP = [
    ("employer", "org", "city", ["In which city was the employer of {name} founded?",
                                 "Where was the company that employed {name} founded?"]),
    ("employer", "org", "founded", ["In which year was the employer of {name} founded?",
                                    "When was the firm that {name} worked for established?"]),
    ("city", "city", "province", ["In which province was {name} born?",
                                  "{name} was born in a city of which province?"]),
]


@dataclass
class Entity:
    id: str
    type: str
    name: str
    facts: dict
    split: str = "train"
    variant: int = 0
    alt_variant: int = 1

    def render(self, variant: int, world: "World") -> str:
        values = {**self.facts, "name": self.name, "Name": _cap(self.name)}
        if "profession" in values:
            p = values["profession"]
            values["a_profession"] = ("an " if p[0] in "aeiou" else "a ") + p
            values["A_profession"] = _cap(values["a_profession"])
        for key in ("city", "employer"):
            if key in values:
                values[key] = world.by_id[values[key]].name
        return TEMPLATES[self.type][variant].format(**values)


@dataclass
class World:
    entities: list[Entity]
    questions: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.by_id = {e.id: e for e in self.entities}

    def doc(self, e: Entity) -> str:
        return e.render(e.variant, self)

    def alt_doc(self, e: Entity) -> str:
        return e.render(e.alt_variant, self)


def _cap(s: str) -> str:
    return s[0].upper() + s[1:] if s else s


def _word(rng: random.Random, syllables: int) -> str:
    w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables - 1))
    return _cap(w + rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS))


def _unique(rng: random.Random, used: set, make) -> str:
    for _ in range(1000):
        value = make()
        if value.lower() not in used:
            used.add(value.lower())
            return value
    raise UserError("could not make enough distinct names; ask for fewer entities")


def make_world(seed: int = 0, entities: int = 60, test_share: float = 0.2) -> World:
    """The entities, their documents and every question, all fixed by `seed`."""
    if entities < 8:
        raise UsageError(f"--entities must be at least 8, got {entities}")
    if not 0 <= test_share < 0.5:
        raise UsageError(f"--test-share must be in [0, 0.5), got {test_share}")
    rng = random.Random(seed)
    used: set = set()
    n_city, n_org = max(2, entities // 6), max(2, entities // 5)
    n_person = entities - n_city - n_org
    provinces = [_unique(rng, used, lambda: _word(rng, 2)) for _ in range(max(2, n_city // 3))]
    rivers = [_unique(rng, used, lambda: _word(rng, 2)) for _ in range(max(2, n_city // 2))]
    out: list[Entity] = []
    for i in range(n_city):
        out.append(Entity(f"city-{i:03d}", "city", _unique(rng, used, lambda: _word(rng, 3)),
                          {"province": rng.choice(provinces), "river": rng.choice(rivers),
                           "founded": rng.randint(1100, 1700)}))
    cities = [e.id for e in out]
    for i in range(n_org):
        name = _unique(rng, used, lambda: rng.choice(_ORG_FORMS).format(_word(rng, 2)))
        out.append(Entity(f"org-{i:03d}", "org", name,
                          {"city": rng.choice(cities), "founded": rng.randint(1750, 1880),
                           "product": rng.choice(PRODUCTS)}))
    orgs = [e.id for e in out if e.type == "org"]
    people = []
    for i in range(n_person):
        name = _unique(rng, used, lambda: f"{_word(rng, 2)} {_word(rng, rng.choice((2, 3)))}")
        def draw_invention():
            return f"the {rng.choice(_INV_ADJ)} {rng.choice(_INV_NOUN)}"

        # distinct while most of the adjective x noun pool is free; a large world shares them
        invention = (_unique(rng, used, draw_invention) if i < _INVENTIONS - 16
                     else draw_invention())
        people.append(Entity(f"person-{i:03d}", "person", name,
                             {"born": rng.randint(1800, 1900), "city": rng.choice(cities),
                              "profession": rng.choice(PROFESSIONS),
                              "employer": rng.choice(orgs), "invention": invention}))
    out += people
    n_test = min(round(test_share * entities), n_person - 1)
    for e in rng.sample(people, n_test):
        e.split = "test"
    for e in out:
        e.variant = rng.randrange(len(TEMPLATES[e.type]))
        e.alt_variant = (e.variant + 1 + rng.randrange(len(TEMPLATES[e.type]) - 1)) % \
            len(TEMPLATES[e.type])
    world = World(out)
    world.questions = _questions(world)
    return world


def _answer(world: World, entity: Entity, fact: str) -> str:
    value = entity.facts[fact]
    if fact in ("city", "employer"):
        return world.by_id[value].name
    return str(value)


def _keyword(answer: str) -> str:
    return answer[4:] if answer.startswith("the ") else answer


def _questions(world: World) -> list[dict]:
    rows = []
    for e in world.entities:
        asks = [("single", [e.id], _answer(world, e, key), wordings)
                for _, key, wordings in QUESTIONS[e.type]]
        if e.type == "person":
            for via, _, fact, wordings in TWO_HOP:
                target = world.by_id[e.facts[via]]
                asks.append(("two-hop", [e.id, target.id], _answer(world, target, fact),
                             wordings))
        for kind, gold, answer, wordings in asks:
            forms = [("original", wordings[0])]
            if e.split == "train":
                forms.append(("paraphrase", wordings[1]))
            for form, wording in forms:
                split = "test" if e.split == "test" else (
                    "train" if form == "original" else "valid")
                question = wording.format(name=e.name, Name=_cap(e.name))
                rows.append({"id": f"q{len(rows):04d}", "question": _cap(question),
                             "answer": answer, "split": split, "entity": e.id, "kind": kind,
                             "form": form, "gold_docs": gold, "keywords": [_keyword(answer)]})
    return rows


def synth_splits(world: World, seed: int = 0, k: int = 5, candidates: int = 20
                 ) -> dict[str, dict[str, list[dict]]]:
    """The rows of every part (docs, qa, cpt, sft, stage1-3), per split."""
    train_docs = [e for e in world.entities if e.split == "train"]
    test_docs = [e for e in world.entities if e.split == "test"]
    all_docs = train_docs + test_docs
    texts = [world.doc(e) for e in all_docs]
    index = {e.id: i for i, e in enumerate(all_docs)}
    train_pool = list(range(len(train_docs)))

    def doc_row(e: Entity) -> dict:
        return {"id": e.id, "text": world.doc(e), "entity": e.name, "type": e.type,
                "split": e.split}

    qa = {s: [q for q in world.questions if q["split"] == s] for s in ("train", "valid", "test")}
    items = {s: [QAItem(q["question"], q["answer"], q["keywords"],
                        gold=[index[d] for d in q["gold_docs"]]) for q in rows]
             for s, rows in qa.items()}
    single = {s: [it for it, q in zip(items[s], qa[s]) if q["kind"] == "single"] for s in qa}

    alt = {index[e.id]: world.alt_doc(e) for e in all_docs}
    train_ids = list(range(len(train_docs)))
    test_ids = list(range(len(train_docs), len(all_docs)))
    parts: dict[str, dict[str, list[dict]]] = {
        "docs": {"train": [doc_row(e) for e in train_docs],
                 "test": [doc_row(e) for e in test_docs]},
        "qa": qa,
        "cpt": {"train": [{"text": world.doc(e), "source": e.id} for e in train_docs],
                "valid": [{"text": world.alt_doc(e), "source": e.id} for e in train_docs],
                "test": [{"text": world.doc(e), "source": e.id} for e in test_docs]},
        "sft": {s: [chat_row(q["question"], q["answer"], entity=q["entity"], kind=q["kind"])
                    for q in qa[s]] for s in qa},
        "stage1": {"train": stage1_rows(texts, single["train"], alt.get, train_ids),
                   "valid": stage1_rows(texts, single["valid"], None, train_ids),
                   "test": stage1_rows(texts, single["test"], alt.get, test_ids)},
    }
    bm25 = BM25(texts)
    n = min(candidates, len(train_docs))
    for stage, size in (("stage2", k), ("stage3", n)):
        rng = random.Random(seed)
        parts[stage] = {s: [retrieval_row(it, texts, bm25, size, rng,
                                          None if s == "test" else train_pool)
                            for it in items[s]] for s in ("train", "valid", "test")}
    return parts


def build_synth(ws: Workspace, name: str, seed: int = 0, entities: int = 60,
                test_share: float = 0.2, force: bool = False) -> list[Path]:
    """Write NAME-docs, NAME-qa, NAME-cpt, NAME-sft, NAME-stage1/2/3; return their folders."""
    for part in PARTS:
        check_new(ws, f"{name}-{part}", force)
    world = make_world(seed, entities, test_share)
    parts = synth_splits(world, seed)
    params = {"entities": entities, "test_share": test_share,
              "test_entities": sorted(e.id for e in world.entities if e.split == "test")}
    items = [{"name": f"{name}-{part}", "kind": part, "splits": parts[part],
              "meta": {"sources": [f"synth:{name}"], "seed": seed, "synthetic": True,
                       "parameters": {**params, **({"k": 5} if part == "stage2" else {}),
                                      **({"candidates": len(parts["stage3"]["train"][0]["docs"])}
                                         if part == "stage3" else {})}}}
             for part in PARTS]
    return write_datasets(ws, items, force=force)  # all seven appear at once, or none
