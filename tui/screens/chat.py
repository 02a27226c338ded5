"""Chat mode: a workspace model, optionally with an adapter (a LoRA run's checkpoint, or a CLaRa
run answering from compressed documents); replies stream token by token from a thread worker,
the reasoning block sits in a collapsed section, and every reply shows its statistics. The
library's chat log (chats/chat_log.jsonl and .csv) keeps the history."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import (Collapsible, Input, Label, LoadingIndicator, Select, SelectionList,
                             Static, Switch)

from clara.errors import UserError
from tui.screens.base import ModeScreen
from tui.widgets.live_text import TextInput
from tui.widgets.switch import StateSwitch
from tui.widgets.ticklist import TickList
from clara.chat.engine import RAG_TOP_K

THINKING = [("hide reasoning", "hide"), ("show reasoning", "show"), ("ban reasoning", "ban")]
RANDOM_TEMPERATURE = 0.7
LABEL_WIDTH = 21  # what a checkpoint picker shows of a label at 100 columns


def adapter_options(ws) -> list[tuple[str, str]]:
    """(label, reference) of every checkpoint chat can use: LoRA runs' best/last/step-N, CLaRa
    runs (their best, else last checkpoint), newest run first. A label starts with what tells
    the rows apart: the pickers are 27 characters wide, and `RUN-ID:best` and `RUN-ID:last`
    were cut to the same `lora-20261130-115222-5ad…`; then the run id, cut in its middle to
    fit, keeping its end (two runs' `best · lora-20261130-2…` looked the same)."""
    from clara import refs
    from clara.runs import Run
    from tui.format import middle

    out = []
    for run_id in refs.usable(ws):  # usable checkpoints only: no failed run, none training
        run = Run(ws.runs_dir / run_id)
        kind = run.config().get("kind", "")
        names = refs.checkpoint_names(run)
        if kind.startswith("clara-"):
            if "best" in names or "last" in names:
                head = f"CLaRa {kind[6:]}"
                out.append((f"{head} · {middle(run.id, max(8, LABEL_WIDTH - len(head) - 3))}",
                            run.id))
            continue
        for name in names:
            head = f"step {int(name[5:])}" if re.fullmatch(r"step-\d+", name) else name
            out.append((f"{head} · {middle(run.id, max(8, LABEL_WIDTH - len(head) - 3))}",
                        f"{run.id}:{name}"))
    return out


def qa_datasets(ws) -> list[str]:
    """The workspace's question/answer datasets (`clara data build qa`): what a memory is."""
    from clara.data.datasets import read_meta

    return [f.name for f in ws.items("datasets") if read_meta(f).get("kind") == "qa"
            and (f / "train.jsonl").is_file()]


def shown_text(text: str) -> str:
    """A reply as displayed: runs of blank lines folded to one (30 of them pushed the
    statistics off screen), ends stripped."""
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text).strip()


def stats_line(reply) -> str:
    """What one reply cost: tokens, speed, prompt size, time to first token, memory."""
    if not reply.text.strip() and reply.generation_tokens <= 1:  # no speed to speak of
        return (f"empty reply · prompt {reply.prompt_tokens} tok · total {reply.latency:.2f}s"
                + (f" · {reply.finish_reason}" if reply.finish_reason else ""))
    return (f"{reply.generation_tokens} tokens · {reply.generation_tps:.1f} tok/s · prompt "
            f"{reply.prompt_tokens} tok · first token {reply.ttft:.2f}s · total "
            f"{reply.latency:.2f}s · peak {reply.peak_memory:.2f} GB"
            + (f" · {reply.finish_reason}" if reply.finish_reason else "")
            + (f" · docs {', '.join(map(str, reply.documents[:4]))}" if reply.documents else ""))


@dataclass(frozen=True)
class Choice:
    """What a session is made of; a new one means a new session (and maybe a model load)."""

    model: str | None
    adapter: str | None
    sources: tuple[str, ...]
    memory: str | None = None  # a QA dataset whose pairs are attached (clara.chat.memory)


class ChatTurn(Vertical):
    """One exchange: the prompt, the reasoning (collapsed), the answer as it streams, stats."""

    DEFAULT_CSS = """
    ChatTurn { height: auto; margin: 0 0 1 0; }
    ChatTurn .turn-prompt { color: $accent; text-style: bold; height: auto; }
    ChatTurn .turn-answer { height: auto; padding: 0 0 0 2; }
    ChatTurn .turn-stats { color: $text-muted; height: auto; padding: 0 0 0 2; }
    ChatTurn Collapsible { height: auto; padding: 0; margin: 0 0 0 2; border: none; }
    ChatTurn Collapsible.empty { display: none; }
    ChatTurn .turn-reasoning { color: $text-muted; height: auto; }
    """

    def __init__(self, prompt: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.prompt = prompt
        self.answer = ""
        self.reasoning = ""

    def compose(self) -> ComposeResult:
        yield Static(f"› {self.prompt}", classes="turn-prompt", markup=False)
        with Collapsible(title="reasoning", collapsed=True, classes="empty"):
            yield Static("", classes="turn-reasoning", markup=False)
        yield Static("…", classes="turn-answer", markup=False)
        yield Static("", classes="turn-stats", markup=False)

    def add(self, text: str, reasoning: bool) -> None:
        if reasoning:
            self.reasoning += text
            box = self.query_one(Collapsible)
            box.remove_class("empty")
            box.title = f"reasoning ({len(self.reasoning.split())} words)"
            self.query_one(".turn-reasoning", Static).update(self.reasoning)
        else:
            self.answer += text
            self.query_one(".turn-answer", Static).update(shown_text(self.answer) or "…")

    def finish(self, reply, stats: str | None = None) -> None:
        """The final answer (the library's split, stripped) and the statistics."""
        self.answer = reply.text
        self.query_one(".turn-answer", Static).update(shown_text(reply.text) or "(empty reply)")
        if reply.reasoning and self.reasoning:
            self.query_one(".turn-reasoning", Static).update(reply.reasoning)
        self.query_one(".turn-stats", Static).update(stats if stats is not None
                                                     else stats_line(reply))

    def failed(self, message: str) -> None:
        self.query_one(".turn-answer", Static).update(f"(no reply: {message})")


class ChatScreen(ModeScreen):
    TITLE = "Chat"
    CSS_PATH = "chat.tcss"
    AUTO_FOCUS = "#prompt"  # arrive ready to type
    BINDINGS = [
        Binding("ctrl+n", "new_chat", "New chat", priority=True),
        Binding("ctrl+o", "pick_adapter", "Adapter", priority=True),
        Binding("ctrl+f", "focus_prompt", "Prompt"),
        Binding("f6", "reload", "Refresh"),
    ]

    class Loading(Message):
        """A model load began (text) or ended (None)."""

        bubble = False  # for this screen only

        def __init__(self, text: str | None) -> None:
            super().__init__()
            self.text = text

    class Delta(Message):
        """A piece of the reply being generated: answer text, or reasoning text."""

        bubble = False  # for this screen only

        def __init__(self, turn: ChatTurn, text: str, reasoning: bool) -> None:
            super().__init__()
            self.turn, self.text, self.reasoning = turn, text, reasoning

    class Note(Message):
        """A line for the transcript about the session itself (documents, a new conversation)."""

        bubble = False  # for this screen only

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Done(Message):
        """The reply is complete: the library's Reply, with its statistics."""

        bubble = False  # for this screen only

        def __init__(self, turn: ChatTurn, reply) -> None:
            super().__init__()
            self.turn, self.reply = turn, reply

    def __init__(self) -> None:
        super().__init__()
        self.session = None
        self.choice: Choice | None = None
        self.index = None  # ChunkIndex of the attached sources
        self.doc_names: dict[str, str] = {}  # source id -> the name the list shows
        self.adapter_labels: dict[str, str] = {}  # checkpoint ref -> the name the lists show
        self.busy = False
        self._lock = threading.Lock()  # one load or generation at a time

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="chat-body"):
            with VerticalScroll(id="chat-side", can_focus=False):  # its fields take focus
                yield Label("Model", classes="side-label")
                yield Select([], id="chat-model", prompt="choose a model", compact=True)
                yield Label("Adapter", classes="side-label")
                yield Select([], id="chat-adapter", prompt="none (the base)", compact=True)
                yield Label("Side by side with the base", classes="side-label")
                yield TickList(id="chat-compare")
                yield Label("Documents", classes="side-label")
                yield TickList(id="chat-docs")
                yield Static("documents attached: none", id="chat-attached")
                yield Label("Memory (a QA dataset's pairs)", classes="side-label")
                yield Select([], id="chat-memory", prompt="none", compact=True)
                yield Static("CLaRa runs answer from these; a plain model gets the best "
                             "k passages (BM25) in its prompt.", classes="side-help")
                with Horizontal(classes="switch-row"):
                    yield Label("passages per prompt k ")
                    yield TextInput("", id="chat-top-k", compact=True, type="integer",
                                    placeholder=str(RAG_TOP_K))
                with Horizontal(classes="switch-row"):
                    yield StateSwitch(True, id="chat-multi")
                    yield Label("multi-turn")
                with Horizontal(classes="switch-row"):
                    yield StateSwitch(False, id="chat-random")
                    yield Label(f"randomness (temp {RANDOM_TEMPERATURE})")
                yield Select(THINKING, id="chat-thinking", value="hide", allow_blank=False,
                             compact=True)
                with Horizontal(classes="switch-row"):
                    yield Label("max tokens ")
                    yield TextInput("128", id="chat-max-tokens", compact=True, type="integer")
                    yield Label(" seed ")
                    yield TextInput("", id="chat-seed", compact=True, type="integer",
                                placeholder="none")
            with Vertical(id="chat-main"):
                with VerticalScroll(id="transcript"):
                    yield Static("Pick a model (and an adapter), then type below. Ctrl+N "
                                 "starts a new chat.", id="chat-empty", classes="muted")
                with Horizontal(id="chat-loading-row", classes="hidden"):
                    yield LoadingIndicator(id="chat-loading")
                    yield Static("", id="chat-loading-text")
                yield TextInput(placeholder="ask something (Enter sends)", id="prompt")
                yield Static("", id="chat-status", classes="muted")

    # -- choices ---------------------------------------------------------------------------
    def reload(self) -> None:
        self.session = None
        self.choice = None
        self._load_choices()

    def on_resume(self) -> None:
        self._load_choices()

    def action_reload(self) -> None:
        self._load_choices()

    @work(thread=True, exclusive=True, group="chat-choices", exit_on_error=False)
    def _load_choices(self) -> None:
        from clara.data.sources import list_sources

        ws = self.app.workspace
        models = [p.name for p in ws.items("models")] if ws else []
        adapters = adapter_options(ws) if ws else []
        listed = list_sources(ws) if ws else []
        counts: dict[str, int] = {}
        for src in listed:
            counts[src.name] = counts.get(src.name, 0) + 1
        # two documents of one name are told apart by their id
        sources = [(src.name if counts[src.name] == 1 else f"{src.name} ({src.id})", src.id)
                   for src in listed]
        memories = qa_datasets(ws) if ws else []
        self.app.call_from_thread(self._set_choices, models, adapters, sources, memories)

    def _set_choices(self, models, adapters, sources, memories=()) -> None:
        if self.unchanged("choices", (self.app.workspace_name, models, adapters, sources,
                                      memories)):
            return
        for wid, options in (("#chat-model", [(m, m) for m in models]),
                             ("#chat-adapter", adapters),
                             ("#chat-memory", [(m, m) for m in memories])):
            select = self.query_one(wid, Select)
            current = select.value
            with self.prevent(Select.Changed):
                select.set_options(options)
                if current in [v for _, v in options]:
                    select.value = current
        self.doc_names = {sid: name for name, sid in sources}
        self.adapter_labels = {ref: label for label, ref in adapters}
        side = self.query_one("#chat-compare", SelectionList)
        ticked = set(side.selected)
        side.clear_options()  # LoRA checkpoints only: a CLaRa run answers from documents
        side.add_options([(label, ref, ref in ticked) for label, ref in adapters if ":" in ref])
        docs = self.query_one("#chat-docs", SelectionList)
        picked = set(docs.selected)
        with self.prevent(SelectionList.SelectedChanged):
            docs.clear_options()
            docs.add_options([(name, sid, sid in picked) for name, sid in sources])
        self._show_attached()
        model = self.query_one("#chat-model", Select)
        if model.value is Select.NULL and models:
            with self.prevent(Select.Changed):  # loaded at the first prompt, not on sight
                model.value = "tiny" if "tiny" in models else models[0]

    def current_choice(self) -> Choice:
        model = self.query_one("#chat-model", Select).value
        adapter = self.query_one("#chat-adapter", Select).value
        memory = self.query_one("#chat-memory", Select).value
        return Choice(None if model is Select.NULL else str(model),
                      None if adapter is Select.NULL else str(adapter),
                      tuple(self.query_one("#chat-docs", SelectionList).selected),
                      None if memory is Select.NULL else str(memory))

    def settings(self):
        from clara.chat.engine import ChatSettings

        thinking = self.query_one("#chat-thinking", Select).value
        numbers = {}
        for name, wid, default in (("max tokens", "#chat-max-tokens", "128"),
                                   ("seed", "#chat-seed", ""), ("k", "#chat-top-k", "")):
            text = self.query_one(wid, Input).value.strip() or default
            try:
                numbers[name] = int(text) if text else None
            except ValueError:
                raise UserError(f"{name}: {text!r} is not a whole number") from None
        return ChatSettings(
            temperature=RANDOM_TEMPERATURE if self.query_one("#chat-random", Switch).value
            else 0.0, max_tokens=numbers["max tokens"], seed=numbers["seed"],
            multi_turn=self.query_one("#chat-multi", Switch).value, top_k=numbers["k"],
            show_reasoning=thinking == "show", ban_thinking=thinking == "ban").validate()

    @on(Select.Changed, "#chat-model")
    @on(Select.Changed, "#chat-adapter")
    @on(SelectionList.SelectedChanged, "#chat-docs")
    @on(Select.Changed, "#chat-memory")
    def _choice_changed(self, event) -> None:
        self._show_attached()
        if isinstance(event, Select.Changed):
            if event.select.id == "chat-adapter":
                self._adapter_base(event.value)
            self.query_one("#prompt", Input).focus()  # chosen: now type
        choice = self.current_choice()
        if choice.model or choice.adapter:
            try:
                settings = self.settings()
            except UserError:
                return  # the prompt will say so
            self._prepare(choice, settings)  # load now, not at the first prompt

    def _show_attached(self) -> None:
        """One line per document, each cut with "…" where too long: the names ran on in one
        line, split mid-word at 100 columns ("…handbook.m" / "d")."""
        docs = self.query_one("#chat-docs", SelectionList)
        names = [self.doc_names.get(v, v) for v in docs.selected]
        memory = self.query_one("#chat-memory", Select).value
        if memory is not Select.NULL:
            names.append(f"memory: {memory}")
        self.query_one("#chat-attached", Static).update(
            "documents attached:" + ("".join(f"\n· {n}" for n in names) or " none"))

    def _adapter_base(self, ref) -> None:
        """Picking a run's checkpoint picks the model it was trained on, when it is here."""
        if ref is Select.NULL:
            return
        from clara.runs import Run

        ws = self.app.workspace
        run = Run(ws.runs_dir / str(ref).split(":")[0])
        base = (run.config().get("config") or {}).get("model") if run.exists else None
        model = self.query_one("#chat-model", Select)
        if base and base in [v for _, v in model._options] and model.value != base:
            with self.prevent(Select.Changed):
                model.value = base

    # -- sessions (thread workers) ------------------------------------------------------------
    def _ensure_session(self, choice: Choice, settings):
        """The session for `choice`, opened (and its model loaded) if needed. Worker thread."""
        from clara.chat.engine import ChatEngine

        if self.session is not None and self.choice == choice:
            return self.session
        if (self.session is not None and self.choice is not None
                and (self.choice.model, self.choice.adapter) == (choice.model, choice.adapter)):
            # only the documents changed: attach them to this session, the conversation stays
            self._attach_sources(self.session, choice)
            self.choice = choice
            self.post_message(self.Note("documents now attached: "
                                        + (", ".join(self._doc_names(choice)) or "none")
                                        + " (same conversation)"))
            return self.session
        ws = self.app.workspace
        if ws is None:
            raise UserError("open a workspace first (F2)")
        if not choice.model and not choice.adapter:
            raise UserError("choose a model first")
        label = choice.adapter or choice.model
        self.post_message(self.Loading(f"loading {label} …"))
        try:
            engine = ChatEngine(ws)
            session = engine.session(choice.model, choice.adapter, settings)
            self._attach_sources(session, choice)
        finally:
            self.post_message(self.Loading(None))
        if self.session is not None:  # said, not silent: the model changed, history starts over
            self.post_message(self.Note(f"new conversation with {label}: the turns above are "
                                        "not part of it"))
        self.session, self.choice = session, choice
        return session

    def _doc_names(self, choice: Choice) -> list[str]:
        return [self.doc_names.get(sid, sid) for sid in choice.sources] + (
            [f"memory {choice.memory}"] if choice.memory else [])

    def _attach_sources(self, session, choice: Choice) -> None:
        """Chunk and index the ticked sources and attach them with the memory's pairs, as `clara
        chat --sources --memory` does (a CLaRa run compresses them)."""
        self.index = None
        if not choice.sources and not choice.memory:
            session.attach([], [])
            return
        texts, ids = [], []
        if choice.memory:
            from clara.chat.memory import read_memory

            texts, ids = read_memory(self.app.workspace, choice.memory)
        if not choice.sources:
            session.attach(texts, ids)
            return
        from clara.data.builders import chunk_documents, documents_from_sources
        from clara.data.chunking import RegexTokenizer
        from clara.evaluation.rag import ChunkIndex

        words = session.entry.model.config.doc_max_tokens if session.is_clara else 128
        docs = documents_from_sources(self.app.workspace, list(choice.sources))
        self.index = ChunkIndex.from_chunks(chunk_documents(docs, RegexTokenizer(),
                                                            max(16, words), 8))
        self.post_message(self.Loading(f"attaching {len(self.index.chunks)} passages"
                                       + (" (compressing)" if session.is_clara else "") + " …"))
        try:
            # the chunks first: CLaRa's picks below index them
            session.attach(self.index.texts + texts, [c.id for c in self.index.chunks] + ids)
        finally:
            self.post_message(self.Loading(None))

    @work(thread=True, group="chat", exit_on_error=False)
    def _prepare(self, choice: Choice, settings) -> None:
        with self._lock:
            if choice != self.app.call_from_thread(self.current_choice):
                return  # the user chose again meanwhile: that worker loads it
            session = self._ensure_session(choice, settings)
        what = session.adapter.label if session.adapter else session.model_label
        self.app.call_from_thread(self._status, f"ready: {what}"
                                  + (" (CLaRa)" if session.is_clara else ""))

    def _select_for(self, session, prompt: str) -> list[int] | None:
        """Which attached passages answer `prompt`: a stage-3 CLaRa model picks its own; a
        plain model gets the library's BM25 top-k (None here)."""
        if self.index is None or not session.is_clara:
            return None
        if session.is_clara:
            from clara.method.inference import retrieves

            model, n = session.entry.model, len(self.index.chunks)
            if retrieves(model, n) or n <= model.config.top_k:
                return None  # it picks its own top-k, or answers from every passage
            return self.index.search(prompt, model.config.top_k)

    @work(thread=True, group="chat", exit_on_error=False)
    def _generate(self, turn: ChatTurn, prompt: str, choice: Choice, settings) -> None:
        try:
            with self._lock:
                session = self._ensure_session(choice, settings)
                if session.is_clara and not (choice.sources or choice.memory):
                    raise UserError("a CLaRa run answers from documents: tick sources under "
                                     "Documents")
                session.settings = settings
                for delta in session.stream(prompt, select=self._select_for(session, prompt)):
                    self.post_message(self.Delta(turn, delta.text, delta.reasoning))
                self.post_message(self.Done(turn, session.last))
        except BaseException as e:
            self.app.call_from_thread(self._failed, turn, e)
            raise

    def _failed(self, turn: ChatTurn, error: BaseException) -> None:
        self.busy = False
        turn.failed(str(error) if isinstance(error, UserError) else type(error).__name__)
        self._status("")

    # -- messages from the workers -------------------------------------------------------------
    def on_chat_screen_loading(self, event: Loading) -> None:
        row = self.query_one("#chat-loading-row")
        row.set_class(event.text is None, "hidden")
        self.query_one("#chat-loading-text", Static).update(event.text or "")

    def on_chat_screen_note(self, event: Note) -> None:
        self.query("#chat-empty").remove()
        self.query_one("#transcript", VerticalScroll).mount(
            Static(f"— {event.text}", classes="chat-note", markup=False))
        self._status(event.text)

    def on_chat_screen_delta(self, event: Delta) -> None:
        event.turn.add(event.text, event.reasoning)
        self.query_one("#transcript", VerticalScroll).scroll_end(animate=False)

    def on_chat_screen_done(self, event: Done) -> None:
        if not event.turn.has_class("side-turn"):  # side by side: busy until the last column
            self.busy = False
        event.turn.finish(event.reply)
        self.query_one("#transcript", VerticalScroll).scroll_end(animate=False)
        if not event.turn.has_class("side-turn"):  # the columns' own line comes at the end
            self._status("saved to chats/chat_log.jsonl")

    def _status(self, text: str) -> None:
        self.query_one("#chat-status", Static).update(text)

    # -- actions -------------------------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    def _submitted(self, event: Input.Submitted) -> None:
        self.send(event.value)

    def send(self, prompt: str) -> ChatTurn | None:
        """Start a reply to `prompt`; returns its turn widget (None when nothing was sent)."""
        prompt = prompt.strip()
        if not prompt:
            return None
        if self.busy:
            self.notify("a reply is still being written", severity="warning", timeout=2)
            return None
        choice = self.current_choice()
        if not choice.model and not choice.adapter:
            self.app.show_error("choose a model first (the Model list on the left)")
            return None
        try:
            settings = self.settings()
        except UserError as e:
            self.app.show_error(e)
            return None
        self.query_one("#prompt", Input).value = ""
        self.query("#chat-empty").remove()
        side = list(self.query_one("#chat-compare", SelectionList).selected)
        if side:
            return self._send_side_by_side(prompt, choice, side, settings)
        turn = ChatTurn(prompt)
        self.query_one("#transcript", VerticalScroll).mount(turn)
        self.busy = True
        self._status("writing …")
        self._generate(turn, prompt, choice, settings)
        return turn

    # -- side by side -----------------------------------------------------------------------------
    def _send_side_by_side(self, prompt: str, choice: Choice, adapters: list[str], settings):
        """The same prompt to the base and each ticked adapter, one column each, one seed (0
        unless given), each reply's reasoning in its own collapsed block. Single-turn."""
        import dataclasses

        if settings.seed is None:
            settings = dataclasses.replace(settings, seed=0)
        # the checkpoint first, as the lists show it: "RUN-ID:best" was cut to "RUN-ID:be"
        columns = [(None, f"base {choice.model}")] + [(a, self.adapter_labels.get(a, a))
                                                      for a in adapters]
        row = Horizontal(classes="side-row")
        turns = []
        self.query_one("#transcript", VerticalScroll).mount(row)
        for ref, title in columns:
            column = Vertical(classes="side-column")
            row.mount(column)
            column.mount(Static(title, classes="side-title", markup=False))
            turn = ChatTurn(prompt, classes="side-turn")
            column.mount(turn)
            turns.append((ref, turn))
        self.busy = True
        docs = len(choice.sources)
        self._status(f"side by side: {len(columns)} replies, seed {settings.seed}"
                     + (f", {docs} document(s) attached" if docs else "") + " …")
        self._generate_side(turns, prompt, choice, settings)
        return turns[0][1]

    class SideDone(Message):
        """Every column has its reply (posted after the last Done: it comes after it)."""

        bubble = False  # for this screen only

        def __init__(self, n: int) -> None:
            super().__init__()
            self.n = n

    @work(thread=True, group="chat", exit_on_error=False)
    def _generate_side(self, turns, prompt: str, choice: Choice, settings) -> None:
        """Each column's session gets the attached documents too, as the single chat does (the
        documents-attached line said so while the columns answered without them)."""
        from clara.chat.engine import ChatEngine

        model = choice.model
        try:
            with self._lock:
                engine = ChatEngine(self.app.workspace)
                for ref, turn in turns:
                    self.post_message(self.Loading(f"loading {ref or model} …"))
                    try:
                        session = engine.session(model if ref is None else None, ref,
                                                 settings)
                    finally:
                        self.post_message(self.Loading(None))
                    if choice.sources or choice.memory:
                        self._attach_sources(session, choice)
                    select = self._select_for(session, prompt)
                    for delta in session.stream(prompt, select=select):
                        self.post_message(self.Delta(turn, delta.text, delta.reasoning))
                    self.post_message(self.Done(turn, session.last))
        except BaseException as e:
            self.app.call_from_thread(self._failed, turns[-1][1], e)
            raise
        self.post_message(self.SideDone(len(turns)))

    def on_chat_screen_side_done(self, event: SideDone) -> None:
        self.busy = False
        self._status(f"{event.n} replies side by side, saved to chats/chat_log.jsonl")

    def action_new_chat(self) -> None:
        if self.busy:
            return
        if self.session is not None:
            self.session.reset()
        self.query_one("#transcript", VerticalScroll).remove_children()
        self._status("new chat")

    def action_pick_adapter(self) -> None:
        """Open the adapter list from anywhere (the prompt keeps letters for itself)."""
        select = self.query_one("#chat-adapter", Select)
        select.focus()
        select.action_show_overlay()

    def action_focus_prompt(self) -> None:
        self.query_one("#prompt", Input).focus()

    def palette_commands(self):
        yield SystemCommand("New chat", "Forget the conversation so far", self.action_new_chat)
