import json

import pytest

from clara.errors import UserError
from clara.workspace import SUBDIRS, Workspace, list_workspaces, validate_name


def test_create_makes_layout_and_toml(root):
    ws = Workspace(root, "alpha").create(description="first")
    for sub in SUBDIRS:
        assert (ws.path / sub).is_dir()
    meta = ws.meta()
    assert meta["name"] == "alpha" and meta["description"] == "first"
    with pytest.raises(UserError, match="already exists"):
        Workspace(root, "alpha").create()


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "a\\b", ".hidden", "x..y", "/abs",
                                 "name with space", "é" * 3])
def test_names_that_escape_or_hide_are_refused(root, bad):
    with pytest.raises(UserError):
        validate_name(bad)
    assert list(root.iterdir()) == []


def test_child_paths_stay_inside(workspace):
    assert workspace.child("datasets", "cpt-1").parent == workspace.datasets_dir
    for bad in ["..", "../../etc", "a/b"]:
        with pytest.raises(UserError):
            workspace.child("runs", bad)


def test_cli_create_list_show(cli, root):
    r = cli("ws", "create", "beta", "--description", "for tests")
    assert r.exit_code == 0, r.output
    assert (root / "beta" / "workspace.toml").is_file()
    (root / "beta" / "datasets" / "d1").mkdir()
    (root / "beta" / "datasets" / "d1" / "train.jsonl").write_text('{"text": "hi"}\n')

    r = cli("ws", "list", "--format", "json")
    rows = json.loads(r.output)
    assert [w["name"] for w in rows] == ["beta"]
    assert rows[0]["datasets"] == 1 and rows[0]["datasets_bytes"] > 0

    r = cli("ws", "list")
    assert "beta" in r.output and "DATASETS" in r.output

    r = cli("-w", "beta", "ws", "show", "--format", "json")
    shown = json.loads(r.output)
    assert shown["items"]["datasets"] == ["d1"]
    r = cli("ws", "show", "beta")
    assert "d1" in r.output


def test_cli_errors_are_one_line_and_nonzero(cli, root):
    r = cli("ws", "create", "../evil")
    assert r.exit_code == 2  # ExitCode.USAGE: a bad name
    assert r.output.strip().count("\n") == 0 and "invalid workspace name" in r.output
    assert not (root.parent / "evil").exists()
    r = cli("-w", "missing", "ws", "show")
    assert r.exit_code == 1 and "clara ws create missing" in r.output
    assert list_workspaces(root) == []


def test_env_selects_workspace(cli, root, monkeypatch):
    cli("ws", "create", "gamma")
    monkeypatch.setenv("CLARA_WORKSPACE", "gamma")
    r = cli("ws", "show", "--format", "json")
    assert json.loads(r.output)["name"] == "gamma"
