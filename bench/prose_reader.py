"""A reading base for prose: synthetic handbook-like articles, span questions about them, and a
tiny Llama pretrained from scratch to answer them from retrieved chunks.

The demo's base must read a chunk of prose and copy the answer out of it: the paraphrased
questions of data/eval_questions.jsonl mostly ask facts that no training question covers, so
only reading answers them. `data/models/reader` learned to read the templated documents of
bench/clara_synth.py and splits prose into near-characters. This module makes reading material
that looks like the prose of a handbook instead, from made-up material only:

  * an article about a made-up place (a founder, buildings, people and their roles, transport,
    prices, sizes, dates, formats, rules), written in dozens of sentence frames (varied word
    order, relative clauses, lists), in sections and paragraphs;
  * cut into chunks exactly as the demo cuts its sources (clara.data.chunking.chunk_text, 24-40
    regex tokens, sentence boundaries preferred), so sentences run across chunks as they do in
    the handbook;
  * per fact whose answer lies in a chunk, questions in several wordings (wh-words, "what is the
    name of", synonyms of the verb, words dropped), answered by the span; the context is the
    gold chunk with distractor chunks of the same and other articles, in a random order, in the
    prompt the demo's `rag` configurations use (clara.chat.engine.rag_prompt, no system prompt)
    and in the CLaRa generator's text prompt (system prompt, "Background:").

Every name is built from syllables, every number drawn; nothing comes from the handbook or its
evaluation questions (tests/test_demo.py checks the vocabulary lists against their keywords).

    python bench/prose_reader.py --workdir /tmp/pr                 # corpus, pretraining, eval
    python bench/prose_reader.py --workdir /tmp/pr --export-base data/models/reader

Prints a table (`clara eval`: the paraphrased handbook questions answered from BM25's top-2
chunks and closed-book, and 100 questions about 20 unseen made-up articles answered from their
own 2 chunks, by the new base and by --compare) and writes bench/results/prose_reader-DATE.json.

MEASURED (2026-11-30, 2 CPU cores shared with four other jobs, load 8-13; `clara eval` as above,
--max-tokens 24 on the handbook, 16 on 60 held-out questions). It does NOT read yet:

  base (hidden 128, 4 layers, 4 heads, 1024-token BPE     handbook rag  closed  held-out rag
  trained on the corpus; 0.94 M parameters)               keyword %     kw %    EM % (F1 %)
  data/models/reader (today's demo base)                   0.0           0.0     0.0 (0.0)
  1. 600 steps x 8 on every token (3000 articles,
     67k rows; val loss 1.50)                              0.0           4.8     -
  2. + 120 answer-only steps x 32 (val 2.53 -> 1.98)        0.0           -       0.0 (0.9)
  3. + 150 answer-only steps x 32, one chunk in 3 of 4
     rows, every location a made-up name (val 2.46 -> 2.03)  0.0           -       0.0 (5.7)
  data/models/reader + 150 answer-only steps x 32 of 3.
     (val 3.19 -> 2.49)                                     0.0           -       0.0 (0.9)

About 25 CPU-minutes in all. What the answers show: after 1 every answer is a year ("1996");
after 2 a location from the closed list of step 1's corpus ("on the northern ridge") whatever
the question; after 3 the right TYPE of answer for the question (who -> "Dr. ...", when ->
"10:40", how far -> "30 km") but never the span of the chunk: the model learned answer-type
priors, not copying. The answer loss plateaus near 2 nats a token, where a reader falls well
below 1. Reading (an induction-style copy of the span after the question's name) did not emerge
in this budget, from scratch or from the synthetic world's reader; bench/clara_synth.py saw the
same (it emerged after 1200 + 650 steps there, and unevenly). Untried: many more steps (a GPU
run), a copy curriculum (one short chunk, the answer right after the name), a wider model.
BM25 finds the handbook's gold chunk in its top 2 for 81.0 % of the paraphrased questions.

GPU RUN (2026-11-30, session 10, one H200; bench/prose_reader_gpu.sh, 522 s of device time):
6000 articles with --copy-share 0.1 --closed-share 0.3 (189,122 rows, built in 12 s there),
2048-token BPE, three bases trained at once on the one GPU through `clara train lora
--fine-tune-type full` (bfloat16 on CUDA, ~128 steps/s each):

  base (4 layers, 4 heads)  all-token phase (batch 32,    answer-only phase (batch 64,   held-out
                            3e-3, stopped at 230 s)       2e-3 cosine)                  rag EM %
                            steps   train loss (last 50)  steps  train / val loss
  A hidden 128 (1.07 M)     19,994  1.46                  7,703  1.04 / 2.93              1.0
  B hidden 192              20,363  1.53                  7,834  1.33 / 3.08              0.0
  C hidden 256              19,785  1.67                  7,650  1.89 / 2.99              0.0

3.4 passes over the corpus on every token; the answer-only phase read only the first 4,200 rows
(--reader-rows was not passed to the --corpus-only step), 117 passes: it memorised them (val
3x train). Reading did NOT emerge: held-out EM 0-1 (data/models/reader: 0.0), handbook rag 0.0
and closed-book 0.0 (A, evaluated on the CPU with --eval-model). As the demo's base (default
SFT recipe, `python -m clara.demo ROOT --config '{"base": ..., "clara": false, "hrm": false}'`)
base A is far WORSE than the reader: trained 14.6 / 6.2 %, paraphrased 2.4 / 0.0 % at SFT seeds
0 / 1 (the reader: 99.1 / 95.6 and 38.1 / 19.0), 97+14 and 100+13 CPU-s. A second lease (one
base, fixed 7000 + 1800 steps with a decaying schedule) did not end inside its 185 s and
returned nothing (232 s of device time). CPU of 60 demo SFT steps (batch 16, load 14): the reader 20+5 CPU-s; hidden
128 with the 2048 BPE 19+3 (its shorter rows pay for the larger vocabulary), 192: 24+4, 256: 33+7.
Untried: the all-token base alone (warmA, not brought back), a decaying all-token schedule,
the answer-only phase on the whole corpus.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# -- vocabulary (made up or generic; none of it from the handbook) -------------------------------
ONSETS = ["b", "br", "d", "dr", "f", "fr", "g", "gr", "h", "j", "k", "kl", "l", "m", "n", "p",
          "pr", "r", "s", "sk", "st", "t", "tr", "v", "w", "z", "sv", "th"]
NUCLEI = ["a", "e", "i", "o", "u", "a", "e", "o", "ei", "au", "y", "ia"]
CODAS = ["", "", "", "n", "r", "l", "m", "s", "nd", "rk", "lt", "st", "ng", "rn", "d", "k"]
FACILITY_KINDS = ["Tower", "Hall", "Mill", "Lodge", "Pier", "Chapel", "Depot", "Barn", "Gate",
                  "Garden", "Lighthouse", "Workshop", "Cabin", "Inn", "Museum", "Archive",
                  "Clinic", "School", "Market", "Bridge", "Greenhouse", "Bakery", "Shed",
                  "Pavilion", "Cottage", "Forge", "Granary", "Boathouse"]
PLACE_KINDS = ["island", "valley", "village", "estate", "peninsula", "town", "harbour town",
               "mountain village", "river town", "lake district"]
ORG_KINDS = ["Institute", "Museum", "Research Centre", "Field School", "Seed Bank", "Weather Post",
             "Marine Station", "Abbey", "College", "Archive", "Botanical Garden", "Mill Company"]
ROLES = ["head of maintenance", "chief engineer", "harbour master", "head gardener", "archivist",
         "treasurer", "ferry captain", "head of research", "warden", "librarian", "cook",
         "bookkeeper", "curator", "head of safety", "groundskeeper", "head teacher", "chief cook",
         "head of the workshop", "keeper of the lighthouse", "chair of the board"]
DUTIES = ["the boats", "the water supply", "the heating", "the greenhouses", "the archive",
          "the accounts", "the bookings", "the cleaning rota", "the seed store", "the tools",
          "the fire drills", "the guest rooms", "the weather records", "the printing press",
          "the beehives", "the orchard", "the first aid courses", "the school visits",
          "the ferry timetable", "the post"]
CONTENTS = ["the maps", "the tools", "the nets", "the bakery", "the chapel organ", "the spare parts",
            "the old ledgers", "the seed trays", "the printing press", "the boat engines",
            "the dining hall", "the reading room", "the laundry", "the meeting room",
            "the first aid room", "the wood stove", "the bicycle store", "the cold store",
            "the lecture room", "the pottery kilns", "the music room", "the guest kitchen"]
# every location names a made-up place ({n}): an answer is read, never guessed from a short list
LOCATIONS = ["on the {n} ridge", "on the southern shore of {n}", "near the old {n} pier",
             "by the {n} river", "at the foot of {n} Hill", "on the eastern cliff of {n}",
             "in the lower meadow of {n}", "beside the road to {n}", "at the end of {n} Street",
             "on the western slope of {n}", "in the {n} wood", "next to {n} Square",
             "behind the {n} chapel", "at the edge of {n}", "by {n} Lake",
             "in the walled garden of {n}", "above the {n} falls", "on the summit of {n}"]
VEHICLES = ["ferry", "bus", "boat", "train", "mail boat", "cable car", "coach", "water taxi"]
TICKETS = [("return ticket", "adults"), ("single ticket", "adults"), ("day pass", "visitors"),
           ("week pass", "students"), ("family ticket", "families"), ("season card", "residents")]
CURRENCIES = ["euros", "crowns", "francs", "pounds", "marks"]
DATA_KINDS = ["photographs", "records", "measurements", "scans", "maps", "recordings", "logs",
              "drawings"]
GROUPS = ["guests", "students", "volunteers", "visiting scientists", "new staff", "pilgrims",
          "school groups", "walkers"]
EVENTS = ["storm", "fire", "flood", "landslide", "gale", "frost"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
MACHINES = ["water pump", "generator", "solar field", "wind turbine", "boiler", "heat pump",
            "water mill", "battery bank"]
COUNTED = ["rooms", "beds", "seats", "desks", "windows", "boats", "bells", "shelves"]
FILLERS = ["Everyone who stays should read this section before arriving.",
           "Please keep the doors closed in windy weather.", "The paths are steep in places.",
           "Dogs must be kept on a lead.", "Most of the year the weather is mild and wet.",
           "Bring warm clothes, even in summer.", "The shop sells bread, fruit and stamps.",
           "Mobile phone coverage is weak in the hills.", "Smoking is not allowed indoors.",
           "Children are welcome when they come with an adult.",
           "The notice board lists the week's events.", "Water from the taps is safe to drink."]
VOCABULARY = {name: value for name, value in globals().items()
              if name.isupper() and isinstance(value, list)}


def word(rng: random.Random, syllables: tuple[int, int] = (2, 2)) -> str:
    """A made-up name of 2 syllables (or as asked), 4-9 letters."""
    while True:
        w = "".join(rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS)
                    for _ in range(rng.randint(*syllables)))
        if 4 <= len(w) <= 9:
            return w.capitalize()


def number(rng: random.Random, lo: float, hi: float, decimals: int = 0) -> str:
    v = rng.uniform(lo, hi)
    s = f"{v:.{decimals}f}"
    return f"{int(s):,}" if decimals == 0 and int(s) >= 10000 else s


# -- an article ----------------------------------------------------------------------------------
@dataclass
class Fact:
    sentence: str
    answer: str
    questions: list[str]
    offset: int = 0  # of the answer within the article (set when placed)


@dataclass
class World:
    rng: random.Random
    place: str = ""
    kind: str = ""
    org: str = ""
    town: str = ""
    people: list[tuple[str, str]] = field(default_factory=list)
    facilities: list[str] = field(default_factory=list)


def person(rng: random.Random) -> str:
    title = rng.choice(["", "", "", "Dr. ", "Professor "])
    return f"{title}{word(rng, (1, 2))} {word(rng, (2, 3))}"


def pick(rng, *options):
    return rng.choice(options)


def facility_facts(w: World, name: str) -> list[Fact]:
    rng = w.rng
    kind = name.split()[-1].lower()
    out: list[Fact] = []
    y = str(rng.randint(1820, 2022))
    out.append(Fact(pick(rng, f"{name} was built in {y}.", f"{name} was completed in {y}.",
                         f"In {y} the {w.kind} gained {name}.", f"Work on {name} ended in {y}.",
                         f"{name} was finished in {y} and is still in use.",
                         f"{name}, finished in {y}, was the first stone building of {w.place}.",
                         f"The first permanent building, {name}, was finished in {y}."),
                    y, [f"When was {name} built?", f"In which year was {name} completed?",
                        f"What year was {name} finished?", f"When was {name} constructed?",
                        f"In what year was {name} built?", f"When did work on {name} end?"]))
    loc = rng.choice(LOCATIONS).format(n=word(rng))
    out.append(Fact(pick(rng, f"{name} stands {loc}.", f"{name} is {loc}.",
                         f"{loc[0].upper() + loc[1:]} stands {name}.",
                         f"{name} lies {loc}, a short walk from the {rng.choice(VEHICLES)} stop.",
                         f"You will find {name} {loc}."),
                    loc, [f"Where is {name}?", f"Where does {name} stand?",
                          f"Where can you find {name}?", f"Where is {name} located?",
                          f"In which place is {name}?"]))
    kind_q = rng.random()
    if kind_q < 0.35:
        n = number(rng, 4, 60)
        what = rng.choice(COUNTED)
        out.append(Fact(pick(rng, f"{name} has {n} {what}.", f"There are {n} {what} in {name}.",
                             f"With {n} {what}, {name} is the largest {kind} of {w.place}.",
                             f"{name} offers {n} {what} and a shared kitchen."),
                        n, [f"How many {what} does {name} have?",
                            f"How many {what} are there in {name}?",
                            f"What is the number of {what} in {name}?",
                            f"How many {what} has {name}?"]))
    elif kind_q < 0.7:
        a, b, c = rng.sample(CONTENTS, 3)
        lst = f"{a}, {b} and {c}"
        out.append(Fact(pick(rng, f"{name} holds {lst}.", f"{name} still houses {lst}.",
                             f"{a[0].upper() + a[1:]}, {b} and {c} are kept in {name}.",
                             f"Inside {name} are {lst}."),
                        lst, [f"What does {name} hold?", f"What is kept in {name}?",
                              f"What can be found inside {name}?", f"What is in {name}?",
                              f"What does {name} house?"]))
    else:
        h = number(rng, 3, 90, rng.choice([0, 0, 1]))
        out.append(Fact(pick(rng, f"{name} is {h} m tall.", f"{name} rises {h} m above the ground.",
                             f"At {h} m, {name} is the tallest building of {w.place}.",
                             f"{name}, {h} m high, can be seen from the sea."),
                        f"{h} m", [f"How tall is {name}?", f"How high is {name}?",
                                   f"What is the height of {name}?", f"How many metres high is "
                                   f"{name}?"]))
    return out


def org_facts(w: World) -> list[Fact]:
    rng = w.rng
    founder, y = person(rng), str(rng.randint(1800, 2000))
    why = rng.choice(["the air is clean", "the land was cheap", "the harbour is sheltered",
                      "the winters are mild", "the soil is rich", "the nights are dark"])
    out = [Fact(pick(rng, f"{w.org} was founded in {y} by {founder}, who chose {w.place} because "
                          f"{why}.",
                     f"{founder} founded {w.org} in {y}.",
                     f"In {y} {founder} started {w.org} on {w.place}.",
                     f"{w.org} was set up by {founder} in {y}."),
                founder, [f"Who founded {w.org}?", f"Who started {w.org}?",
                          f"Who set up {w.org}?", f"Who was the founder of {w.org}?",
                          f"By whom was {w.org} founded?"])]
    out.append(Fact(f"{w.org} dates from {y}.", y,
                    [f"When was {w.org} founded?", f"In what year was {w.org} founded?",
                     f"In which year was {w.org} set up?", f"How old is {w.org}? It dates from"]))
    out[1].questions = out[1].questions[:3]
    return out


def people_facts(w: World) -> list[Fact]:
    rng = w.rng
    out = []
    for (name, role), duty in zip(w.people, rng.sample(DUTIES, len(w.people))):
        y = str(rng.randint(1980, 2024))
        sentence = pick(rng, f"{name}, {role} since {y}, is responsible for {duty}.",
                        f"The {role} is {name}, who looks after {duty}.",
                        f"{name} works as the {role} and takes care of {duty}.",
                        f"{name} has been the {role} since {y}; the job includes {duty}.",
                        f"Questions about {duty} go to the {role}, {name}.")
        out.append(Fact(sentence, name,
                        [f"Who is the {role}?", f"Who works as the {role}?",
                         f"What is the name of the {role}?", f"Who serves as {role}?",
                         f"Who is responsible for {duty}?", f"Who looks after {duty}?",
                         f"Whom should you ask about {duty}?", f"Who takes care of {duty}?"]))
    return out


def travel_facts(w: World) -> list[Fact]:
    rng = w.rng
    v = rng.choice(VEHICLES)
    vname = f"the {v} {word(rng)}"
    hh, mm = rng.randint(5, 20), rng.choice(["00", "10", "15", "20", "30", "40", "45", "50"])
    t = f"{hh:02d}:{mm}"
    km = number(rng, 2, 80, rng.choice([0, 1]))
    ticket, group = rng.choice(TICKETS)
    cost, cur = number(rng, 3, 90), rng.choice(CURRENCIES)
    mins = number(rng, 15, 150)
    return [
        Fact(pick(rng, f"The only regular connection is {vname}, which leaves {w.town} at {t}.",
                  f"{vname[0].upper() + vname[1:]} leaves {w.town} every morning at {t}.",
                  f"From {w.town}, {vname} sails at {t}."),
             w.town, [f"Where does {vname} leave from?", f"From which town does the {v} leave?",
                      f"Which town does {vname} sail from?",
                      f"Where does the {v} to {w.place} start?"]),
        Fact(pick(rng, f"The {v} leaves at {t} and the crossing takes {mins} minutes.",
                  f"At {t} the {v} departs."),
             t, [f"At what time does the {v} leave?", f"When does the {v} depart?",
                 f"What time does the {v} leave?"]),
        Fact(pick(rng, f"{w.place} lies {km} km off the coast.",
                  f"{w.place} is {km} km from {w.town}.",
                  f"The distance from {w.town} to {w.place} is {km} km."),
             f"{km} km", [f"How far is {w.place} from {w.town}?",
                          f"How far off the coast is {w.place}?",
                          f"What is the distance between {w.town} and {w.place}?",
                          f"How many kilometres is it to {w.place}?"]),
        Fact(pick(rng, f"A {ticket} costs {cost} {cur} for {group}.",
                  f"{group.capitalize()} pay {cost} {cur} for a {ticket}.",
                  f"The price of a {ticket} is {cost} {cur}; children travel free."),
             f"{cost} {cur}", [f"How much does a {ticket} cost?",
                               f"What is the price of a {ticket}?",
                               f"How many {cur} does a {ticket} cost?",
                               f"How much do {group} pay for a {ticket}?"]),
    ]


def misc_facts(w: World) -> list[Fact]:
    rng = w.rng
    out = []
    group, lodge = rng.choice(GROUPS), f"{word(rng)} {rng.choice(['House', 'Lodge', 'Cottage', 'Inn'])}"
    n = number(rng, 4, 40)
    out.append(Fact(pick(rng, f"{group.capitalize()} sleep in {lodge}, the guest house next to "
                              f"{rng.choice(w.facilities)}, which has {n} rooms.",
                         f"{group.capitalize()} stay at {lodge}.",
                         f"Rooms for {group} are in {lodge}."),
                    lodge, [f"Where do {group} sleep?", f"Where do {group} stay?",
                            f"What is the name of the guest house where {group} sleep?",
                            f"In which house do {group} stay?"]))
    code, data = "".join(rng.choice("ABCDEGHKLMNPRSTVWXZ") for _ in range(rng.randint(3, 4))), \
        rng.choice(DATA_KINDS)
    out.append(Fact(pick(rng, f"All {data} are saved in the {code} format.",
                         f"{data.capitalize()} are stored as {code} files.",
                         f"The {data} are kept in {code} format on the server."),
                    code, [f"In which format are the {data} saved?",
                           f"What file format is used for {data}?",
                           f"In what format are {data} stored?"]))
    m, p = rng.choice(MACHINES), number(rng, 5, 900)
    unit = rng.choice(["kW", "kW", "MW"])
    out.append(Fact(pick(rng, f"Electricity comes from a {m} of {p} {unit}.",
                         f"The {m} delivers {p} {unit}.",
                         f"Power comes from a {p} {unit} {m} and a diesel engine."),
                    f"{p} {unit}", [f"What is the power of the {m}?",
                                    f"How much power does the {m} give?",
                                    f"How many {unit} does the {m} deliver?"]))
    fac = rng.choice(w.facilities)
    ev, y = rng.choice(EVENTS), rng.randint(1900, 2020)
    mo = rng.choice(MONTHS)
    out.append(Fact(pick(rng, f"A {ev} damaged {fac} in {y}; it reopened in {mo} {y + 1}.",
                         f"After the {ev} of {y}, {fac} reopened in {mo} {y + 1}.",
                         f"Repairs took a year and {fac} reopened in {mo} {y + 1}."),
                    f"{mo} {y + 1}", [f"When did {fac} reopen?",
                                      f"When did {fac} reopen after the {ev}?",
                                      f"In which month and year did {fac} open again?"]))
    disk = number(rng, 2, 900)
    srv = word(rng)
    out.append(Fact(pick(rng, f"The {srv} server has {disk} terabytes of disk space.",
                         f"Data go to the {srv} server, which holds {disk} terabytes."),
                    disk, [f"How much disk space does the {srv} server have?",
                           f"How many terabytes does the {srv} server hold?"]))
    cap = number(rng, 5, 120)
    out.append(Fact(pick(rng, f"At most {cap} visitors are allowed on an open day.",
                         f"Open days are limited to {cap} visitors."),
                    cap, ["How many visitors are allowed on an open day?",
                          "How many visitors at most may come on an open day?"]))
    return out


def article(seed: int) -> tuple[str, list[Fact]]:
    """A made-up handbook-like article and its facts (each with the answer's offset)."""
    rng = random.Random(seed)
    w = World(rng)
    w.place, w.kind = word(rng), rng.choice(PLACE_KINDS)
    w.org = f"the {word(rng)} {rng.choice(ORG_KINDS)}"
    w.town = word(rng)
    w.people = [(person(rng), r) for r in rng.sample(ROLES, rng.randint(3, 5))]
    kinds = rng.sample(FACILITY_KINDS, rng.randint(3, 5))
    w.facilities = [f"the {word(rng)} {k}" for k in kinds]
    sections = [("History", org_facts(w)),
                ("Buildings", [f for name in w.facilities for f in facility_facts(w, name)]),
                ("Staff", people_facts(w)), ("Travel", travel_facts(w)),
                ("Daily Life", misc_facts(w))]
    rng.shuffle(sections)
    intro = (f"This guide describes {w.org}, a small community on the {w.kind} of {w.place}. "
             f"It is read by everyone who stays there.")
    text, facts = f"{w.org[4:]}: a guide\n\n{intro}", []
    for title, fs in sections:
        fs = [f for f in fs if rng.random() < 0.85]
        fs += [Fact(s, "", []) for s in rng.sample(FILLERS, rng.randint(0, 2))]
        rng.shuffle(fs)
        text += f"\n\n{title}\n\n"
        for i, f in enumerate(fs):
            s = f.sentence[0].upper() + f.sentence[1:]
            if i and rng.random() < 0.3:
                text += "\n\n"
            elif i:
                text += " "
            pos = s.find(f.answer) if f.answer else -1
            if pos >= 0:
                f.offset = len(text) + pos
                facts.append(f)
            text += s
    return text, facts


# -- reading rows --------------------------------------------------------------------------------
def reading_items(n_articles: int, seed: int, ks: tuple[int, ...] = (1, 2, 2, 2, 3),
                  rng: random.Random | None = None):
    """(question, answer, docs, gold index) per fact whose answer lies in one chunk: the chunk
    and distractor chunks of the same article (and, at times, of earlier ones), k of `ks`
    chunks in all, in a random order; a quarter of the questions with words dropped."""
    from clara.data.chunking import RegexTokenizer, chunk_text
    from clara.demo import thinned

    rng = rng or random.Random(seed)
    tok = RegexTokenizer()
    prev_chunks: list[str] = []
    for a in range(n_articles):
        text, facts = article(seed * 1_000_003 + a)
        chunks = chunk_text(text, tok, rng.choice([24, 28, 32, 32, 32, 40]), 0)
        for f in facts:
            gold = next((i for i, c in enumerate(chunks)
                         if c.start <= f.offset and f.offset + len(f.answer) <= c.end), None)
            if gold is None:
                continue
            q = rng.choice(f.questions)
            if rng.random() < 0.25:
                q = (thinned(q, 1, rng) or [q])[0]
            k = rng.choice(ks)
            others = [c.text for i, c in enumerate(chunks) if i != gold]
            pool = others + prev_chunks[-40:] if rng.random() < 0.3 else others
            docs = [chunks[gold].text] + rng.sample(pool, min(k - 1, len(pool)))
            order = list(range(len(docs)))
            rng.shuffle(order)
            yield q, f.answer, [docs[i] for i in order], order.index(0)
        prev_chunks += [c.text for c in chunks]


def reading_rows(n_articles: int, seed: int, clara_share: float = 0.25,
                 ks: tuple[int, ...] = (1, 2, 2, 2, 3), copy_share: float = 0.0,
                 closed_share: float = 0.0) -> list[dict]:
    """Chat rows of `reading_items`: the question with its chunks in the demo's rag prompt (or,
    for `clara_share` of them, CLaRa's text prompt), answered by the span. With `copy_share`,
    that share of the gold chunks also as a copy row ("Repeat the background.": the copy
    curriculum, an induction head's first task); with `closed_share`, that share of the facts
    also asked closed-book in another wording (the question alone, as the demo's SFT rows ask
    the handbook's facts): the model learns to answer a fact it read under a new wording."""
    from clara.chat.engine import rag_prompt
    from clara.method.prompts import SYSTEM_RAG

    rng = random.Random(seed)
    rows = []

    def chat(user: str, answer: str, msgs=()) -> dict:
        return {"messages": [*msgs, {"role": "user", "content": user},
                             {"role": "assistant", "content": answer}]}

    for q, answer, docs, gold in reading_items(n_articles, seed, ks, rng):
        if rng.random() < clara_share:
            user = "Background:\n" + "\n".join(docs) + f"\n\nQuestion:{q}"
            rows.append(chat(user, answer, [{"role": "system", "content": SYSTEM_RAG}]))
        else:
            rows.append(chat(rag_prompt(q, docs), answer))
        if copy_share and rng.random() < copy_share:  # (no draw when off: the
            # default corpus stays what the measurements above used)
            rows.append(chat(f"Background:\n{docs[gold]}\n\nRepeat the background.", docs[gold]))
        if closed_share and rng.random() < closed_share:
            rows.append(chat(q, answer))
    rng.shuffle(rows)
    return rows


def heldout_qa(n_articles: int, seed: int, k: int = 2) -> list[dict]:
    """QA rows with their own chunks (`clara eval` answers them from these): the reading test on
    articles never trained on."""
    return [{"id": f"syn-{i}", "question": q, "answer": a, "keywords": [a], "docs": docs,
             "pos_index": [gold]}
            for i, (q, a, docs, gold) in enumerate(reading_items(n_articles, seed, (k,)))]


def write_corpus(ws_path: Path, name: str, rows: list[dict], valid: int, meta: dict) -> None:
    from clara.data.datasets import write_dataset
    from clara.workspace import Workspace

    ws = Workspace(ws_path.parent, ws_path.name)
    write_dataset(ws, name, "sft", {"train": rows[valid:], "valid": rows[:valid]},
                  {"format": "chat", **meta})


# -- the study -----------------------------------------------------------------------------------
READER_README = """# reader: a tiny Llama that reads prose

A Llama of hidden size {hidden}, {layers} layers and 4 heads (byte-level BPE tokenizer of {vocab}
tokens and a ChatML template, as `clara model init-tiny` makes them), pretrained from scratch by
`python bench/prose_reader.py --export-base DIR` on {articles} made-up handbook-like articles
(seed {seed}): questions about a fact, answered by its span, from the chunk that holds it and
distractor chunks, in the prompt of the demo's `rag` configurations and in the CLaRa generator's
text prompt. Nothing in it comes from the handbook. {pre_iters} steps (batch 8) on every token,
then {reader_iters} answer-only steps (batch 32). Weights in bfloat16 (MLX casts them to the
platform dtype on load).
"""


def clara(root: Path, *argv: str, verbose: bool = False, seconds: float | None = None) -> str:
    """Run `clara -w study ARGV` in its own process (as a user would). With `seconds`, a
    training command (with --name) is stopped after that long (`clara runs stop`: the run saves
    a checkpoint and stops, and its last checkpoint is what a fuse takes)."""
    import os
    import subprocess

    env = {**os.environ, "CLARA_HOME": str(root), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "clara", "-w", "study", *argv]
    if verbose:
        print("$", " ".join(cmd[2:]), flush=True)
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT)
    try:
        out, err = p.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:  # `clara runs stop`: the run saves, then ends
        subprocess.run([*cmd[:5], "runs", "stop", argv[argv.index("--name") + 1]], env=env,
                       cwd=ROOT, capture_output=True, check=False)
        out, err = p.communicate()
        print(f"  stopped after {seconds:.0f} s: {' '.join(argv[:4])}", flush=True)
        return out
    if p.returncode:
        sys.exit(f"failed: {' '.join(argv)}\n{out[-3000:]}\n{err[-3000:]}")
    return out


def evaluate(root: Path, model: str, name: str, heldout: Path,
             evals: tuple | list = ("handbook", "heldout")) -> dict:
    """`clara eval` of `model`: rag and closed-book on the paraphrased handbook questions, as the
    demo runs them (BM25 top 2 of 32-word chunks), and rag on `heldout` (unseen made-up
    articles, each question with its own 2 chunks); {set: {config: {keyword, em, recall}}}."""
    from clara import io

    out = {}
    for label, data, extra in (
            ("handbook", ROOT / "data" / "eval_questions.jsonl",
             ["-c", "rag", "-c", "closed", "--chunk-tokens", "32", "--chunk-overlap", "0"]),
            ("heldout", heldout, ["-c", "rag"])):
        if label not in evals:
            continue
        ev = root / "study" / "evals" / f"{name}-{label}"
        if not (ev / "summary.json").is_file():
            clara(root, "eval", "-d", str(data), "-m", model, *extra, "--top-k", "2",
                  "--max-tokens", "24", "--name", ev.name)
        out[label] = {r["config"]: {k: r.get(k) for k in ("keyword", "em", "recall")}
                      for r in io.read_json(ev / "summary.json")["summary"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="Workspace root to use and keep.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--articles", type=int, default=3000, help="Made-up articles to read.")
    p.add_argument("--copy-share", type=float, default=0.0,
                   help="Share of the reading rows whose gold chunk is also a copy row.")
    p.add_argument("--closed-share", type=float, default=0.0,
                   help="Share of the facts also asked closed-book (the question alone).")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--tag", default="", help="Suffix of this base's models and runs (several "
                   "bases can train at once on one corpus, e.g. on a GPU).")
    p.add_argument("--corpus-only", action="store_true",
                   help="Write the corpus and stop (then start one process per --tag).")
    p.add_argument("--pre-iters", type=int, default=600, help="All-token steps.")
    p.add_argument("--pre-batch", type=int, default=8)
    p.add_argument("--pre-lr", type=float, default=3e-3)
    p.add_argument("--pre-seconds", type=float, default=None,
                   help="Stop the all-token phase after this long (its last checkpoint goes "
                        "on; the answer-only phase then gets steps at the rate measured).")
    p.add_argument("--reader-iters", type=int, default=120, help="Answer-only steps.")
    p.add_argument("--reader-batch", type=int, default=32)
    p.add_argument("--reader-seconds", type=float, default=None,
                   help="Instead of --reader-iters: the steps that fit this long at the "
                        "all-token phase's rate (80 %% of it).")
    p.add_argument("--reader-rows", type=int, default=4200,
                   help="Answer-only phase: the first N training rows of the corpus (loading "
                        "all of them costs minutes).")
    p.add_argument("--reader-lr", type=float, default=2e-3)
    p.add_argument("--max-seq-length", type=int, default=320)
    p.add_argument("--evals", default="handbook,heldout",
                   help="What to evaluate: handbook (needs pdfplumber), heldout, or none.")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="Export each phase's base (bfloat16) and its run metrics here as it "
                        "ends (a killed job still leaves what finished).")
    p.add_argument("--compare", default=str(ROOT / "data" / "models" / "reader"),
                   help="A model folder to evaluate alongside ('' for none).")
    p.add_argument("--export-base", default=None, metavar="DIR",
                   help="Write the pretrained base to DIR (bfloat16), as data/models/reader.")
    p.add_argument("--eval-model", default=None, metavar="DIR",
                   help="Only evaluate the base in DIR (e.g. one a GPU run exported), as "
                        "--evals says, beside --compare.")
    p.add_argument("--verbose", "-v", action="store_true")
    args = p.parse_args()
    from clara.platform import reexec_with_blas

    reexec_with_blas()
    from clara_synth import export_base, last_metrics

    root = Path(args.workdir).resolve()
    ws = root / "study"
    tag = args.tag
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(args.out).resolve() if args.out else None

    def phase(name):
        timings[name] = round(time.perf_counter() - t0 - sum(timings.values()), 1)
        print(f"[{time.perf_counter() - t0:6.0f}s] {name} done ({tag or '-'})", flush=True)

    def run(*a, seconds=None):
        return clara(root, *a, verbose=args.verbose, seconds=seconds)

    def save(model: str, run_name: str) -> None:
        if out_dir:
            export_base(ws / "models" / model, out_dir / model,
                        argparse.Namespace(entities=args.articles, **vars(args)))
            shutil.copy2(ws / "runs" / run_name / "metrics.jsonl",
                         out_dir / f"{run_name}-metrics.jsonl")

    if not (ws / "workspace.toml").is_file():
        root.mkdir(parents=True, exist_ok=True)
        run("ws", "create", "study")
    if not args.eval_model and not (ws / "datasets" / "prose-read").is_dir():
        rows = reading_rows(args.articles, args.seed, copy_share=args.copy_share,
                            closed_share=args.closed_share)
        write_corpus(ws, "prose-read", rows, 200, {
            "seed": args.seed, "articles": args.articles, "copy_share": args.copy_share,
            "closed_share": args.closed_share})
    if not args.eval_model and not (ws / "datasets" / "prose-read-s").is_dir():
        from clara import io

        src = ws / "datasets" / "prose-read"
        rows = io.read_jsonl(src / "train.jsonl")[:args.reader_rows]
        write_corpus(ws, "prose-read-s", io.read_jsonl(src / "valid.jsonl")[:100] + rows, 100,
                     {"note": f"the first {args.reader_rows} rows of prose-read"})
    heldout = root / "heldout.jsonl"
    if not heldout.is_file():
        from clara import io

        io.write_jsonl(heldout, heldout_qa(20, args.seed + 999)[:100])
    if args.corpus_only:
        phase("corpus")
        return
    model = f"tiny{tag}"
    if args.eval_model:  # a base made elsewhere: evaluated here, nothing trained
        model = Path(args.eval_model).name
        if not (ws / "models" / model).is_dir():
            shutil.copytree(args.eval_model, ws / "models" / model)
    elif not (ws / "models" / f"tiny{tag}").is_dir():
        run("model", "init-tiny", f"tiny{tag}", "--from-data", "prose-read", "--hidden",
            str(args.hidden), "--layers", str(args.layers), "--heads", str(args.heads),
            "--vocab", str(args.vocab), "--seed", str(args.seed))
    phase("data+model")
    rate = None  # all-token steps a second (for --reader-seconds)
    # every weight trains: first on every token (language, formats, answer types), then on the
    # answers alone at a larger batch (the reading signal is a few tokens per row)
    for name, out, data, mask, iters, batch, lr, warmup, seconds in (
            ("pretrain", "warm", "prose-read", "--no-mask-prompt", args.pre_iters,
             args.pre_batch, args.pre_lr, 20, args.pre_seconds),
            ("reader", "base", "prose-read-s", "--mask-prompt", args.reader_iters,
             args.reader_batch, args.reader_lr, 10, None)):
        name, out = name + tag, out + tag
        if name.startswith("reader") and args.reader_seconds:
            if rate:
                iters = max(10, int(0.8 * rate * args.reader_seconds))
                print(f"  {name}: {iters} steps ({rate:.1f} steps/s measured)", flush=True)
            seconds = 1.5 * args.reader_seconds + 60  # a hard stop too (loading, compiling)
        if args.eval_model:
            break
        if iters and not (ws / "models" / out).is_dir():
            shutil.rmtree(ws / "runs" / name, ignore_errors=True)
            run("train", "lora", "-m", model, "-d", data, "--mode", "sft", mask,
                "--fine-tune-type", "full", "--num-layers", "-1", "--iters", str(iters),
                "--batch-size", str(batch), "--learning-rate", str(lr),
                "--min-learning-rate", str(lr / 10), "--warmup-steps", str(warmup),
                "--max-seq-length", str(args.max_seq_length), "--val-every", "0",
                "--val-batches", "8", "--save-every", str(max(100, iters // 10)),
                "--name", name, "--seed", str(args.seed), seconds=seconds)
            last = last_metrics(ws / "runs" / name)["last_train"] or {}
            rate = (last.get("step") or 0) / max(1.0, last.get("elapsed_s") or 1.0)
            run("model", "fuse", out, "--run", name)
            save(out, name)
        if iters:
            model = out
        phase(name)
    evals = [e for e in args.evals.split(",") if e in ("handbook", "heldout")]
    if "handbook" in evals and (not (ws / "sources").is_dir()
                                or not any((ws / "sources").iterdir())):
        run("data", "import", str(ROOT / "data" / "sample" / "karsholm_observatory_handbook.pdf"))
    figs = {model: evaluate(root, model, f"eval-{model}", heldout, evals)}
    if args.compare and evals:
        if not (ws / "models" / "compare").is_dir():
            shutil.copytree(args.compare, ws / "models" / "compare")
        figs[args.compare] = evaluate(root, "compare", "eval-compare", heldout, evals)
    phase("eval")
    if args.export_base and not args.eval_model:
        export_base(ws / "models" / model, Path(args.export_base),
                    argparse.Namespace(entities=args.articles, **vars(args)))
        dest = Path(args.export_base)
        tiny = json.loads((ws / "models" / f"tiny{tag}" / "clara_tiny.json").read_text())
        (dest / "README.md").write_text(READER_README.format(**{**vars(args), **{
            "vocab": tiny["vocab_size"]}}))

    print(f"\n{'base':<40} {'handbook rag kw %':>17} {'closed kw %':>11} "
          f"{'held-out rag EM %':>17}")
    for m, f in figs.items():
        h = f.get("handbook", {})
        print(f"{Path(m).name:<40} "
              f"{100 * (h.get('rag', {}).get('keyword') or 0):>17.1f} "
              f"{100 * (h.get('closed', {}).get('keyword') or 0):>11.1f} "
              f"{100 * (f.get('heldout', {}).get('rag', {}).get('em') or 0):>17.1f}")
    if "handbook" in evals:
        print(f"BM25 recall@2 of the handbook's gold chunk: "
              f"{100 * (figs[model]['handbook']['rag']['recall'] or 0):.1f} %")
    result = {"args": vars(args), "figures": figs, "timings": timings,
              "runs": {n: last_metrics(ws / "runs" / (n + tag)) for n in ("pretrain", "reader")
                       if (ws / "runs" / (n + tag)).is_dir()}}
    res = (out_dir or ROOT / "bench" / "results") / \
        f"prose_reader{tag}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    res.parent.mkdir(parents=True, exist_ok=True)
    res.write_text(json.dumps(result, indent=2))
    print(f"wrote {res}")


if __name__ == "__main__":
    main()
