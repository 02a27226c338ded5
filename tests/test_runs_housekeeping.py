"""Run housekeeping in the library and the CLI: rename, archive (hidden from lists and pickers
unless asked) and tags, with the refusals: a run that trains, a name in use, a run another run
starts from."""

from __future__ import annotations

import os

import pytest

from clara.runs import (archive_run, create_run, find_run, list_runs, rename_run, run_references,
                        tag_run)


@pytest.fixture
def two_runs(workspace):
    a = create_run(workspace, "lora", {"model": "tiny", "seed": 0}, name="alpha")
    b = create_run(workspace, "lora", {"model": "tiny", "seed": 1}, name="beta")
    for run in (a, b):
        run.write_status(status="completed")
    return a, b


def test_rename_moves_the_folder_and_keeps_the_history(cli, workspace, two_runs):
    a, _ = two_runs
    res = cli("-w", "test", "runs", "rename", "alpha", "alpha-v1")
    assert res.exit_code == 0, res.output
    assert "renamed run alpha -> alpha-v1" in res.output
    assert not a.path.exists()
    moved = find_run(workspace, "alpha-v1")
    assert moved.config()["config"]["seed"] == 0  # the same run, under its new name
    assert moved.raw_status()["renamed_from"] == "alpha"
    assert moved.events()[-1] == {**moved.events()[-1], "event": "rename", "from": "alpha",
                                  "to": "alpha-v1"}
    listed = cli("-w", "test", "runs", "list").output
    assert "alpha-v1" in listed and "alpha " not in listed


def test_rename_refusals_are_one_line_and_change_nothing(cli, workspace, two_runs):
    a, b = two_runs
    refusals = []
    res = cli("-w", "test", "runs", "rename", "alpha", "beta")  # a name in use
    assert res.exit_code == 2 and "'beta' is already in use" in res.output
    refusals.append(res)
    res = cli("-w", "test", "runs", "rename", "alpha", "../out")  # not a name
    assert res.exit_code == 2 and "invalid run name" in res.output
    refusals.append(res)
    b.write_status(status="running", pid=os.getpid())  # training
    res = cli("-w", "test", "runs", "rename", "beta", "gamma")
    assert res.exit_code == 1 and "stop it before renaming" in res.output
    refusals.append(res)
    # a run that starts from alpha's checkpoint (by path, as the plan resolves --from)
    create_run(workspace, "lora", {"model": "tiny", "from_adapter": str(a.adapters / "best")},
               name="child")
    assert run_references(workspace, a) == ["run child"]
    res = cli("-w", "test", "runs", "rename", "alpha", "renamed")
    assert res.exit_code == 1 and "used by run child" in res.output
    for res in refusals + [res]:
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert a.exists and b.exists and not (workspace.runs_dir / "gamma").exists()
    assert not (workspace.runs_dir / "renamed").exists()


def test_archive_hides_a_run_from_lists_and_pickers_until_unarchived(cli, workspace, two_runs):
    from clara import refs

    a, b = two_runs
    (a.adapters / "best").mkdir()  # refs.usable offers runs with a checkpoint
    res = cli("-w", "test", "runs", "archive", "alpha")
    assert res.exit_code == 0 and "archived run alpha" in res.output
    assert [r.id for r in list_runs(workspace)] == ["beta"]
    assert [r.id for r in list_runs(workspace, archived=True)] == ["alpha"]
    assert "alpha" not in refs.usable(workspace)
    assert "alpha" not in cli("-w", "test", "runs", "list").output
    assert "alpha" in cli("-w", "test", "runs", "list", "--archived").output
    both = cli("-w", "test", "runs", "list", "--all").output
    assert "alpha" in both and "beta" in both
    assert find_run(workspace, "alpha").id == "alpha"  # its id still finds it
    res = cli("-w", "test", "runs", "unarchive", "alpha")
    assert res.exit_code == 0 and "unarchived run alpha" in res.output
    assert [r.id for r in list_runs(workspace)] == ["alpha", "beta"]
    b.write_status(status="running", pid=os.getpid())
    res = cli("-w", "test", "runs", "archive", "beta")
    assert res.exit_code == 1 and "stop it before archiving" in res.output
    assert not b.raw_status().get("archived")


def test_tags_add_remove_and_filter(cli, workspace, two_runs):
    a, _ = two_runs
    res = cli("-w", "test", "runs", "tag", "alpha", "baseline", "handbook", "baseline")
    assert res.exit_code == 0 and "tags baseline, handbook" in res.output
    assert tag_run(a) == ["baseline", "handbook"]
    listed = cli("-w", "test", "runs", "list", "--tag", "baseline").output
    assert "alpha" in listed and "beta" not in listed and "baseline,handbook" in listed
    res = cli("-w", "test", "runs", "tag", "alpha", "-r", "baseline")
    assert res.exit_code == 0 and "tags handbook" in res.output
    res = cli("-w", "test", "runs", "tag", "alpha", "-r", "nope")
    assert res.exit_code == 2 and "has no tag 'nope'" in res.output
    res = cli("-w", "test", "runs", "tag", "alpha", "two words")
    assert res.exit_code == 2 and "no spaces or commas" in res.output
    assert cli("-w", "test", "runs", "list", "--tag", "baseline").output.startswith("no runs")
    json_rows = cli("-w", "test", "runs", "list", "--format", "json").output
    assert '"tags": [\n      "handbook"\n    ]' in json_rows
    archive_run(a)  # labels live side by side
    assert find_run(workspace, "alpha").summary()["tags"] == ["handbook"]
    with pytest.raises(Exception, match="already has that name"):
        rename_run(workspace, a, "alpha")
