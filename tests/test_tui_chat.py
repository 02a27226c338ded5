"""Chat mode with a real tiny model: a reply streams into the screen token by token from a thread
worker (the Delta messages are seen on the message queue), statistics follow, the library's log
keeps the exchange; the toggles reach the session; a failed load opens a dialog."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from textual.widgets import Select, SelectionList, Static

from clara.chat.log import ChatLog
from clara.data.sources import import_files
from tests.tui_helpers import make_app, settle, shown, wait_for
from tui.screens.chat import ChatScreen, ChatTurn


@pytest.fixture
def chat_ws(workspace, tiny_model_dir, tmp_path):
    shutil.copytree(tiny_model_dir, workspace.models_dir / "tiny")
    doc = tmp_path / "mill.txt"
    doc.write_text("Alia built the river mill in 1801. Borun repaired the harbour bell in "
                   "1812.\n\nCetra painted a glass tower in 1790.\n")
    import_files(workspace, [doc])
    return workspace


@pytest.mark.timeout(90)
def test_a_reply_streams_token_by_token_with_statistics_and_is_logged(chat_ws):
    messages = []

    async def go():
        app = make_app(chat_ws.root, start_mode="chat")
        async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, ChatScreen)
            assert screen.query_one("#chat-model", Select).value == "tiny"
            screen.query_one("#chat-max-tokens").value = "12"
            # a random tiny model answers greedily with blank lines: sample, seeded
            await pilot.click("#chat-random")
            screen.query_one("#chat-seed").value = "1"
            await pilot.press("ctrl+f")
            await pilot.press(*"Who built the mill?")
            await pilot.press("enter")
            await wait_for(pilot, lambda: not screen.busy, timeout=60, what="the reply")
            turn = screen.query_one(ChatTurn)
            assert turn.prompt == "Who built the mill?"
            stats = str(turn.query_one(".turn-stats", Static).render())
            assert "tok/s" in stats and "first token" in stats and "peak" in stats
            assert screen.session.last.generation_tokens == 12
            assert turn.answer == screen.session.last.text and turn.answer
            # (the hook may see a message twice: once posted, once delivered)
            deltas = {id(m): m for m in messages if isinstance(m, ChatScreen.Delta)}
            streamed = [m.text for m in deltas.values()]
            assert len(streamed) >= 5  # the reply arrived in pieces, not at once
            assert "".join(streamed).strip() == turn.answer
            assert str(turn.query_one(".turn-answer", Static).render()) == turn.answer
            # multi-turn (on by default) keeps the exchange in the session's history
            assert len(screen.session.history) == 2
            # greedy again, thinking banned, multi-turn off: the next reply's settings
            multi, random_ = screen.query_one("#chat-multi"), screen.query_one("#chat-random")
            assert "on" in shown(multi).split() and "on" in shown(random_).split()
            await pilot.click("#chat-random")
            await pilot.click("#chat-multi")
            screen.query_one("#chat-thinking", Select).value = "ban"
            await pilot.pause()
            # a switch's state reads as text, not only as its knob's place and colour
            assert "off" in shown(multi).split() and "off" in shown(random_).split()
            screen.send("And the bell?")
            await wait_for(pilot, lambda: not screen.busy, timeout=60, what="second reply")
            s = screen.session.settings
            assert s.temperature == 0 and not s.multi_turn and s.ban_thinking
            assert len(screen.query(ChatTurn)) == 2
            await pilot.press("escape", "ctrl+n")
            await pilot.pause()
            assert not screen.query(ChatTurn) and screen.session.history == []
            assert app.errors == []

    asyncio.run(go())
    assert any(isinstance(m, ChatScreen.Loading) and m.text for m in messages)
    assert [type(m) for m in messages if isinstance(m, ChatScreen.Done)]
    log = ChatLog(chat_ws.chats_dir).read()
    assert [r["prompt"] for r in log] == ["Who built the mill?", "And the bell?"]
    assert log[0]["model"] == "tiny" and log[1]["settings"]["thinking"] == "banned"
    assert log[0]["reply"] and log[0]["settings"]["temperature"] > 0
    assert log[0]["settings"]["seed"] == 1 and log[0]["generation_tokens"] == 12


@pytest.mark.timeout(90)
def test_documents_give_a_plain_model_the_best_passages(chat_ws):
    async def go():
        app = make_app(chat_ws.root, start_mode="chat")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.query_one("#chat-max-tokens").value = "4"
            docs = screen.query_one("#chat-docs", SelectionList)
            assert docs.option_count == 1
            docs.select_all()
            await pilot.pause()
            screen.send("Who painted the tower?")
            await wait_for(pilot, lambda: not screen.busy, timeout=60, what="the reply")
            assert screen.index is not None and screen.session.last.documents
            assert app.errors == []

    asyncio.run(go())
    (record,) = ChatLog(chat_ws.chats_dir).read()
    assert record["documents"] and record["prompt_tokens"] > 20  # the passages were in it


@pytest.mark.timeout(60)
def test_a_model_that_cannot_load_opens_a_dialog_and_the_app_goes_on(chat_ws):
    (chat_ws.models_dir / "broken").mkdir()
    (chat_ws.models_dir / "broken" / "config.json").write_text("{not json")

    async def go():
        app = make_app(chat_ws.root, start_mode="chat")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.query_one("#chat-model", Select).value = "broken"
            await wait_for(pilot, lambda: app.errors, timeout=30, what="the error dialog")
            assert type(app.screen).__name__ == "ErrorDialog"
            await pilot.press("escape")
            assert app.is_running
            assert screen.query_one("#chat-loading-row").has_class("hidden")

    asyncio.run(go())


@pytest.mark.timeout(90)
def test_ticking_a_document_is_visible_and_keeps_the_conversation(chat_ws, tmp_path):
    """Defect 2: ticked and unticked rows draw different marks, a line names the attached
    documents, two documents of one name are told apart, and ticking one during a chat attaches
    it to the same session (its history stays) with a note in the transcript."""
    other = tmp_path / "other" / "mill.txt"
    other.parent.mkdir()
    other.write_text("Dorel rebuilt the mill wheel in 1830.\n")
    import_files(chat_ws, [other])

    async def go():
        app = make_app(chat_ws.root, start_mode="chat")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.query_one("#chat-max-tokens").value = "4"
            docs = screen.query_one("#chat-docs", SelectionList)
            labels = [str(docs.get_option_at_index(i).prompt) for i in range(docs.option_count)]
            assert len(set(labels)) == 2 and all(lab.startswith("mill.txt") for lab in labels)
            attached = screen.query_one("#chat-attached", Static)
            assert str(attached.render()) == "documents attached: none"
            line = "".join(seg.text for seg in docs.render_line(0))
            assert "▐ ▌" in line and "✓" not in line
            screen.send("Who built the mill?")
            await wait_for(pilot, lambda: not screen.busy, timeout=60, what="the reply")
            session = screen.session
            assert len(session.history) == 2
            docs.focus()  # by key, as a user ticks: the first row is highlighted on arrival,
            await pilot.press("space")  # so the first space ticks it (it ticked nothing)
            await pilot.pause()
            assert docs.selected == [docs.get_option_at_index(0).value]
            assert "▐✓▌" in "".join(seg.text for seg in docs.render_line(0))
            assert str(attached.render()) == f"documents attached:\n· {labels[0]}"
            await wait_for(pilot, lambda: screen.query(".chat-note"), timeout=30,
                           what="the note about the documents")
            assert "same conversation" in str(screen.query_one(".chat-note", Static).render())
            assert screen.session is session and len(session.history) == 2
            assert screen.index is not None
            assert app.errors == []

    asyncio.run(go())


@pytest.mark.timeout(120)
def test_side_by_side_sends_one_prompt_to_the_base_and_an_adapter(chat_ws):
    """Missing piece: ticking a run under "Side by side" answers the prompt in columns, the
    base first, with one seed; each column keeps its own reply and statistics."""
    from dataclasses import asdict

    from clara import io
    from clara.runs import create_run
    from clara.train import tasks
    from clara.train.config import EngineConfig, TrainConfig, merge_config
    from clara.train.engine import Engine

    data = chat_ws.path / "sft"
    rows = [{"messages": [{"role": "user", "content": "Who built the mill?"},
                          {"role": "assistant", "content": "Alia built the river mill."}]}] * 8
    io.write_jsonl(data / "train.jsonl", rows)
    io.write_jsonl(data / "valid.jsonl", rows[:2])
    model = str(chat_ws.models_dir / "tiny")
    cfg = merge_config(TrainConfig, None, {
        "model": "tiny", "data": str(data), "iters": 2, "batch_size": 4, "max_seq_length": 64,
        "learning_rate": 1e-2, "val_every": 2, "save_every": 2, "lora_rank": 4})
    run = create_run(chat_ws, "lora", asdict(cfg), resolved={"model": model, "data": str(data)},
                     name="sft-run")
    doc = run.config()
    Engine(tasks.create("lora", doc, run.path), EngineConfig.from_dict(doc["config"]),
           run.path).run()
    run.write_status(status="completed")  # as the worker process does when the engine ends

    async def go():
        app = make_app(chat_ws.root, start_mode="chat")
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.query_one("#chat-max-tokens").value = "6"
            side = screen.query_one("#chat-compare", SelectionList)
            assert "sft-run:best" in [side.get_option_at_index(i).value
                                      for i in range(side.option_count)]
            side.select("sft-run:best")
            screen.query_one("#chat-docs", SelectionList).select_all()  # each column gets them
            await pilot.pause()
            screen.send("Who built the mill?")
            await wait_for(pilot, lambda: not screen.busy, timeout=90, what="both replies")
            # the checkpoint first, as the lists show it ("sft-run:best" was cut to ":be")
            titles = [str(t.render()) for t in screen.query(".side-title").results(Static)]
            assert titles == ["base tiny", "best · sft-run"]
            assert str(screen.query_one("#chat-status", Static).render()).startswith(
                "2 replies side by side")  # said after the last column's reply, not before
            turns = list(screen.query(ChatTurn).results(ChatTurn))
            assert len(turns) == 2
            for turn in turns:
                assert "tokens" in str(turn.query_one(".turn-stats", Static).render()) or \
                    "empty reply" in str(turn.query_one(".turn-stats", Static).render())
            assert app.errors == []

    asyncio.run(go())
    log = ChatLog(chat_ws.chats_dir).read()
    assert len(log) == 2 and {r["settings"]["seed"] for r in log} == {0}
    assert all(r["documents"] for r in log)  # the attached documents reached both columns
    assert log[0]["adapter"] in (None, "") and "sft-run" in str(log[1]["adapter"])
