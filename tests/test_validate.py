"""Validation of dataset rows: every kind of bad row, reported as `file:line: field: problem`."""

from __future__ import annotations

import json

import pytest

from clara.data.validate import (detect_kind, require_valid, validate_dataset, validate_file,
                                 validate_rows)
from clara.errors import ValidationFailed


def write_lines(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines),
                    encoding="utf-8")
    return path


def messages(*roles):
    return {"messages": [{"role": r, "content": f"{r} says"} for r in roles]}


def run_validate(cli, path, kind=None):
    args = ["data", "validate", str(path)] + (["--kind", kind] if kind else [])
    return cli(*args)


def test_text_rows_every_problem_with_exact_location(cli, tmp_path):
    f = write_lines(tmp_path / "t.jsonl", [
        {"text": "fine"},
        '{"text": }',
        "[1, 2]",
        {"other": "x"},
        {"text": 3},
        {"text": "   "},
    ])
    r = run_validate(cli, f, "text")
    assert r.exit_code == 3
    assert r.output.splitlines() == [
        f"{f}:2: invalid JSON: Expecting value (column 10)",
        f"{f}:3: expected a JSON object, got list",
        f"{f}:4: text: missing",
        f"{f}:5: text: expected a string, got number",
        f"{f}:6: text: empty string",
    ]


def test_valid_file_prints_ok_and_exit_zero(cli, tmp_path):
    f = write_lines(tmp_path / "t.jsonl", [{"text": "a"}, {"text": "b", "source": "x"}])
    r = run_validate(cli, f)
    assert r.exit_code == 0
    assert r.output.startswith("ok: 2 rows")


def test_chat_roles(tmp_path):
    f = write_lines(tmp_path / "c.jsonl", [
        messages("system", "user", "assistant"),
        messages("user", "assistant", "user"),
        messages("user", "bot"),
        messages("user", "system", "assistant"),
        messages("assistant"),
        {"messages": "hi"},
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant"}]},
    ])
    got = [e.location() for e in validate_file(f, "sft")]
    assert got == [
        f"{f}:2: messages[2].role: the last message must be from the assistant, got 'user'",
        f"{f}:3: messages[1].role: unknown role 'bot' (expected one of system, user, "
        "assistant, tool)",
        f"{f}:3: messages[1].role: the last message must be from the assistant, got 'bot'",
        f"{f}:4: messages[1].role: a system message may only come first",
        f"{f}:5: messages: no user message",
        f"{f}:6: messages: expected a list of messages, got string",
        f"{f}:7: messages[0].content: empty string",
        f"{f}:7: messages[1].content: missing",
    ]


def test_stage1_rows(tmp_path):
    f = write_lines(tmp_path / "s1.jsonl", [
        {"data_type": "qa", "question": ["Q1?", "Q2?"], "answers": ["a", "b"], "docs": ["d"]},
        {"data_type": "paraphrase", "answers": ["p"], "docs": ["d"]},
        {"question": ["Q?"], "answers": ["a"], "docs": ["d1", "d2"]},
        {"question": ["Q1?", "Q2?"], "answers": ["a"], "docs": ["d"]},
        {"data_type": "paraphrase", "answers": "p", "docs": ["d"]},
        {"question": "Q?", "answers": ["a"], "docs": ["d"]},
        {"data_type": "summary", "docs": ["d"]},
        {"question": ["Q?"], "answers": ["a"], "context": ["only context"]},
        {"question": ["Q?"], "answers": ["a"]},
    ])
    got = [e.location() for e in validate_file(f, "stage1")]
    assert got == [
        f"{f}:3: docs: stage 1 rows need exactly 1 document, got 2",
        f"{f}:4: answers: 1 answers for 2 questions (the lists must have equal length)",
        f"{f}:5: answers: expected a list (element 0 is the paraphrase), got string",
        f"{f}:6: question: expected a list of questions for a stage 1 qa row, got string",
        f"{f}:7: data_type: expected 'qa' or 'paraphrase', got 'summary'",
        f"{f}:9: docs: missing (give the documents as a list in docs, context or content)",
    ]


def test_stage2_same_k_and_orig_field_variants(tmp_path):
    f = write_lines(tmp_path / "s2.jsonl", [
        {"question": "Q?", "docs": ["a", "b", "c"], "answer": "x"},
        {"question": "Q?", "context": ["a", "b", "c"], "golden_answers": ["x"]},
        {"question": "Q?", "content": ["a", "b", "c"], "answers": ["x", "y"]},
        {"question": "Q?", "docs": ["a", "b"], "answer": "x"},
        {"question": "Q?", "docs": ["a", "b", "c"], "gold_answer": "x"},
        {"question": "", "docs": ["a", "", "c"], "answer": ["x"]},
    ])
    got = [e.location() for e in validate_file(f, "stage2")]
    assert got == [
        f"{f}:4: docs: has 2 documents, but {f}:1 has 3 (every row needs the same number)",
        f"{f}:5: answer: missing (give answer, answers or golden_answers)",
        f"{f}:6: question: empty string",
        f"{f}:6: answer: expected a string, got list",
        f"{f}:6: docs[1]: empty string",
    ]


def test_stage3_any_n_and_pos_index(cli, tmp_path):
    f = write_lines(tmp_path / "s3.jsonl", [
        {"question": "Q?", "docs": ["a", "b", "c"], "answer": "x", "pos_index": [0, 2]},
        {"question": "Q?", "docs": ["a", "b", "c"], "answer": "x", "pos_index": [3]},
        {"question": "Q?", "docs": ["a", "b"], "answer": "x"},
        {"question": "Q?", "docs": ["a", "b", "c"], "answer": "x", "pos_index": ["1", -1]},
        {"question": "Q?", "docs": ["a", "b", "c"], "answer": "x", "pos_index": 1},
    ])
    r = run_validate(cli, f, "stage3")
    assert r.exit_code == 3
    assert r.output.splitlines() == [
        f"{f}:2: pos_index[0]: 3 is out of range for 3 documents",
        # line 3 has 2 candidates where the others have 3: stage 3 allows it (a batch takes rows
        # of one N, as the reference needs N equal within a batch only)
        f"{f}:4: pos_index[0]: expected an integer, got string",
        f"{f}:4: pos_index[1]: -1 is out of range for 3 documents",
        f"{f}:5: pos_index: expected a list of document indices, got number",
    ]


def test_completions_and_qa(tmp_path):
    errs = validate_rows([{"prompt": "p", "completion": "c"}, {"prompt": "p"}], "completions",
                         "x.jsonl")
    assert [e.location() for e in errs] == ["x.jsonl:2: completion: missing"]
    errs = validate_rows([{"question": "q", "answer": "a", "keywords": ["k", 1]},
                          {"question": "q", "answer": "a", "doc": ["d"], "source": "s"}], "qa",
                         "q.jsonl")
    assert [e.location() for e in errs] == ["q.jsonl:1: keywords[1]: expected a string, got number"]


def test_auto_detection_from_rows(tmp_path):
    cases = {
        "text": {"text": "a"}, "chat": messages("user", "assistant"),
        "completions": {"prompt": "p", "completion": "c"}, "qa": {"question": "q", "answer": "a"},
        "stage1": {"question": ["q"], "answers": ["a"], "docs": ["d"]},
        "stage2": {"question": "q", "docs": list("abcde"), "answer": "a"},
        "stage3": {"question": "q", "docs": list("abcdefgh"), "answer": "a"},
    }
    for kind, row in cases.items():
        assert detect_kind(write_lines(tmp_path / f"{kind}.jsonl", [row])) == kind
    # one document with a question string: a gold-only stage 2 row, not stage 1
    gold = {"question": "q", "docs": ["d"], "answer": "a"}
    assert detect_kind(write_lines(tmp_path / "gold.jsonl", [gold])) == "stage2"


def test_dataset_folder_and_require_valid(cli, tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "dataset.toml").write_text('kind = "stage2"\n')
    write_lines(d / "train.jsonl", [{"question": "q", "docs": ["a", "b"], "answer": "x"}])
    write_lines(d / "valid.jsonl", [{"question": "q", "docs": ["a", "b", "c"], "answer": "x"}])
    kind, counts, errors = validate_dataset(d)
    assert kind == "stage2" and counts == {"train": 1, "valid": 1}
    assert [e.location() for e in errors] == [
        f"{d}/valid.jsonl:1: docs: has 3 documents, but {d}/train.jsonl:1 has 2 "
        "(every row needs the same number)"]
    with pytest.raises(ValidationFailed) as info:
        require_valid(d, "stage2")
    assert "valid.jsonl:1: docs" in str(info.value)
    assert run_validate(cli, d).exit_code == 3

    write_lines(d / "valid.jsonl", [{"question": "q", "docs": ["a", "b"], "answer": "x"}])
    assert require_valid(d, "stage2") == {"train": 1, "valid": 1}
    with pytest.raises(ValidationFailed, match="kind: is 'stage2', expected chat"):
        require_valid(d, "sft")
    r = run_validate(cli, d)
    assert r.exit_code == 0 and r.output.startswith("ok: 2 rows")

    write_lines(d / "train.jsonl", [])
    with pytest.raises(ValidationFailed, match="train.jsonl: no rows"):
        require_valid(d)
