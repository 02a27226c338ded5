"""`clara runs`: list, inspect, follow, stop, resume and delete training runs."""

from __future__ import annotations

import contextlib
import json

import click

from clara.cli.common import AppContext, emit_record, emit_rows, format_option, pass_app
from clara.errors import UserError, ExitCode
from clara.runs import (ACTIVE, Follower, Run, archive_run, delete_run, find_run, list_runs,
                        outcome_code, rename_run, request_stop, start_worker, tag_run)

_COLUMNS = [("id", "RUN"), ("kind", "KIND"), ("status", "STATUS"), ("step", "STEP"),
            ("total_steps", "OF"), ("train_loss", "TRAIN"), ("val_loss", "VALID"),
            ("best_step", "BEST"), ("model", "MODEL"), ("created", "CREATED"),
            ("tags_text", "TAGS")]


def _progress_text(last: dict, val: dict) -> str:
    parts = []
    if "train_loss" in last:
        parts.append(f"loss {last['train_loss']:.4f}")
    if "val_loss" in val:
        parts.append(f"val {val['val_loss']:.4f}")
    if last.get("tokens_per_second"):
        parts.append(f"{last['tokens_per_second']:.0f} tok/s")
    return "  ".join(parts)


def follow_run(run: Run, proc=None, poll: float = 0.5) -> dict:
    """Show a progress bar fed from the run's files until it ends; Ctrl-C stops it (saving)."""
    status = run.status()
    seen = {"train": {}, "valid": {}, "step": 0}
    with contextlib.ExitStack() as stack:
        bar = None
        try:
            for update in run.follow(poll=poll, proc=proc, events=False):
                status = update.status
                for row in update.metrics:
                    seen["valid" if "val_loss" in row else "train"] = row
                total = status.get("total_steps")
                if bar is None and (total or update.done):
                    bar = stack.enter_context(click.progressbar(
                        length=total or 1, label=run.id, show_pos=True,
                        item_show_func=lambda _: _progress_text(seen["train"], seen["valid"])))
                step = int(seen["train"].get("step", 0))
                if bar is not None and step > seen["step"]:
                    bar.update(step - seen["step"], current_item=step)
                    seen["step"] = step
        except KeyboardInterrupt:
            click.echo("\nstopping: the run saves a checkpoint first...", err=True)
            request_stop(run)
            if proc is not None:
                proc.wait()
            status = run.status()
    return status


def report_outcome(run: Run, status: dict) -> None:
    """Print how a run ended; end the command with the run's exit code (see `outcome_code`)."""
    click.echo(f"run {run.id}: {status.get('status')}"
               + (f" ({status.get('message')})" if status.get("message") else ""))
    if status.get("best_step") and status.get("best_val_loss") is not None:
        # HRM runs keep the best validation exact accuracy there (clara.hrm.task.best_metric)
        what = "val exact accuracy" if run.config().get("kind") == "hrm" else "val loss"
        click.echo(f"best step {status['best_step']} ({what} {status['best_val_loss']:.4f}):"
                   f" {run.adapters / 'best'}")
    if (run.adapters / "last").exists():
        click.echo(f"last checkpoint: {run.adapters / 'last'}")
    code = outcome_code(status)
    if code != ExitCode.OK:
        raise UserError(f"run {run.id} {status.get('status')}: {status.get('message')}",
                         exit_code=code)


def launch(run: Run, detach: bool, world: dict | None = None) -> None:
    """Start the run's worker; detached: print the id and return; else follow it to the end."""
    proc = start_worker(run, detach=detach, world=world)
    if detach:
        click.echo(run.id)
        return
    click.echo(f"run {run.id}  (folder {run.path}; Ctrl-C stops and saves)", err=True)
    report_outcome(run, follow_run(run, proc))


@click.group("runs")
def runs_group():
    """Training runs: one folder each, readable without the app."""


@runs_group.command("list")
@click.option("--archived", "which", flag_value="archived",
              help="List only the archived runs.")
@click.option("--all", "which", flag_value="all", help="List archived runs too.")
@click.option("--tag", "tags", multiple=True, metavar="TAG",
              help="Only runs with this tag (repeat: runs with every one of them).")
@format_option
@pass_app
def runs_list(app: AppContext, which: str | None, tags: tuple[str, ...], fmt: str):
    """List the runs of the workspace, oldest first, with status, losses and tags. Archived
    runs are left out unless --archived or --all.

    Example: clara runs list --tag baseline --format json
    """
    archived = {"archived": True, "all": None}.get(which or "", False)
    rows = [r.summary() for r in list_runs(app.workspace(), archived=archived)]
    rows = [{**r, "tags_text": ",".join(r["tags"]) or "-"} for r in rows
            if all(t in r["tags"] for t in tags)]
    hidden = "" if archived is not False else \
        " (archived runs are hidden: clara runs list --all)"
    emit_rows(rows, _COLUMNS, fmt, empty="no runs" + (" with those tags" if tags else "")
              + (hidden if tags or which else " (start one with: clara train lora ...)"))


@runs_group.command("show")
@click.argument("run_ref", metavar="RUN")
@format_option
@pass_app
def runs_show(app: AppContext, run_ref: str, fmt: str):
    """Show one run: status, configuration, latest metrics, checkpoints (RUN: id, prefix or last).

    Example: clara runs show last
    """
    run = find_run(app.workspace(), run_ref)
    doc = run.config()
    record = {**run.summary(), "path": str(run.path), "status_detail": run.status(),
              "config": doc.get("config"), "resolved": doc.get("resolved"),
              "platform": doc.get("platform"),
              "checkpoints": [p.name for p in run.checkpoints()]}
    if fmt == "json":
        emit_record(record, fmt)
        return
    emit_record(record, fmt, [(k, k) for k in ("id", "kind", "status", "step", "total_steps",
                                                "train_loss", "val_loss", "best_step", "model",
                                                "data", "world_size", "backend", "message",
                                                "path")])
    click.echo(f"{'checkpoints'.ljust(11)}  {', '.join(record['checkpoints']) or '-'}")
    cfg = record["config"] or {}
    click.echo("config       " + " ".join(f"{k}={v}" for k, v in sorted(cfg.items())))


def _line(row: dict) -> str:
    if "event" in row:
        rest = " ".join(f"{k}={v}" for k, v in row.items() if k not in ("event", "time"))
        return f"[{row.get('time', '')}] {row['event']} {rest}".rstrip()
    parts = [f"step {row.get('step')}"]
    for k, v in row.items():
        if k != "step":
            parts.append(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


@runs_group.command("tail")
@click.argument("run_ref", metavar="RUN")
@click.option("-n", "lines", default=20, show_default=True, help="Rows to show first.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new rows until the run ends.")
@click.option("--events/--no-events", default=True, help="Interleave events with metrics.")
@format_option
@pass_app
def runs_tail(app: AppContext, run_ref: str, lines: int, follow: bool, events: bool, fmt: str):
    """Print the newest metrics (and events) of a run; --follow keeps going while it runs.

    Example: clara runs tail last -n 5 --follow
    """
    run = find_run(app.workspace(), run_ref)

    def show(rows):
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False) if fmt == "json" else _line(row))

    first = Follower(run).read(events=events)
    show((first.metrics + first.events)[-lines:] if lines else [])
    shown = max((r.get("step", 0) for r in first.metrics), default=0)
    if follow:
        for update in run.follow(first.offsets, events=events):
            rows = update.metrics
            if update.reset:  # a resume rewrote the file: skip the rows already shown
                rows = [r for r in rows if r.get("step", 0) > shown]
            shown = max([shown] + [r.get("step", 0) for r in rows])
            show(rows + update.events)


@runs_group.command("stop")
@click.argument("run_ref", metavar="RUN")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the run has saved and exited.")
@pass_app
def runs_stop(app: AppContext, run_ref: str, wait: bool):
    """Ask a running run to save a checkpoint and stop (SIGTERM + stop file).

    Example: clara runs stop last
    """
    from clara.runs import wait_until_done

    run = find_run(app.workspace(), run_ref)
    if not request_stop(run):
        raise UserError(f"run {run.id} is not running ({run.status().get('status')})")
    if not wait:
        click.echo(f"asked run {run.id} to stop")
        return
    st = wait_until_done(run, timeout=600)
    click.echo(f"run {run.id}: {st.get('status')} at step {st.get('step')}")


@runs_group.command("resume")
@click.argument("run_ref", metavar="RUN")
@click.option("--detach", is_flag=True, help="Return at once; follow with clara runs tail.")
@click.option("--nproc", type=int, default=None,
              help="Resume on this many processes (default: as the run was started).")
@click.option("--hosts", default=None, help="Resume across these comma-separated hosts.")
@click.option("--hostfile", default=None, help="Resume on the hosts of this mlx.launch hostfile.")
@click.option("--backend", default=None,
              type=click.Choice(["auto", "ring", "jaccl", "mpi", "nccl"]),
              help="Distributed backend of the resumed run.")
@pass_app
def runs_resume(app: AppContext, run_ref: str, detach: bool, nproc, hosts, hostfile, backend):
    """Continue a stopped or interrupted run from its last checkpoint (weights, optimizer, data
    order and random state restored), on as many processes as before or as --nproc says.

    Example: clara runs resume last --detach --nproc 2
    """
    run = find_run(app.workspace(), run_ref)
    st = run.status()
    if st.get("status") in ACTIVE:
        raise UserError(f"run {run.id} is {st.get('status')}: nothing to resume")
    if st.get("status") == "completed":
        raise UserError(f"run {run.id} is completed: nothing to resume")
    world = {k: v for k, v in (("nproc", nproc), ("hosts", hosts), ("hostfile", hostfile),
                               ("backend", backend)) if v is not None}
    if nproc is not None or hosts or hostfile:  # a new place: the run's own does not apply
        world = {"nproc": 1, "hosts": None, "hostfile": None, **world}
    launch(run, detach, world or None)


@runs_group.command("delete")
@click.argument("run_ref", metavar="RUN")
@click.option("--force", is_flag=True, help="Stop the run first if it is running.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def runs_delete(app: AppContext, run_ref: str, force: bool, yes: bool):
    """Delete a run folder (refused while it runs, unless --force).

    Example: clara runs delete lora-20261121-101500-ab12 --yes
    """
    run = find_run(app.workspace(), run_ref)
    if not yes:
        click.confirm(f"delete run {run.id} and its checkpoints?", abort=True)
    delete_run(run, force=force)
    click.echo(f"deleted run {run.id}")


@runs_group.command("rename")
@click.argument("run_ref", metavar="RUN")
@click.argument("new_name")
@pass_app
def runs_rename(app: AppContext, run_ref: str, new_name: str):
    """Give a run another name (its folder's). Refused while it trains, for a name in use, and
    while another run or a pipeline starts from it (exit 1; a bad or taken name: exit 2).

    Example: clara runs rename last handbook-sft-v1
    """
    ws = app.workspace()
    run = find_run(ws, run_ref)
    old = run.id
    moved = rename_run(ws, run, new_name)
    click.echo(f"renamed run {old} -> {moved.id}")


@runs_group.command("archive")
@click.argument("run_refs", metavar="RUN...", nargs=-1, required=True)
@click.option("--undo", is_flag=True, help="Unarchive: list and offer the runs again.")
@pass_app
def runs_archive(app: AppContext, run_refs: tuple[str, ...], undo: bool):
    """Archive runs: their folders stay, but lists and pickers leave them out (`runs list
    --archived` shows them; their ids still work). A run that is training is refused.

    Example: clara runs archive lora-20261121-101500-ab12 ; clara runs archive --undo last
    """
    ws = app.workspace()
    runs = [find_run(ws, ref) for ref in run_refs]  # every reference checked before any change
    for run in runs:
        archive_run(run, not undo)
        click.echo(f"{'unarchived' if undo else 'archived'} run {run.id}")


@runs_group.command("unarchive")
@click.argument("run_refs", metavar="RUN...", nargs=-1, required=True)
@click.pass_context
def runs_unarchive(ctx: click.Context, run_refs: tuple[str, ...]):
    """List and offer archived runs again (as `clara runs archive --undo`).

    Example: clara runs unarchive lora-20261121-101500-ab12
    """
    ctx.invoke(runs_archive, run_refs=run_refs, undo=True)


@runs_group.command("tag")
@click.argument("run_ref", metavar="RUN")
@click.argument("tags", nargs=-1, metavar="[TAG]...")
@click.option("--remove", "-r", "remove", multiple=True, metavar="TAG",
              help="Remove this tag (repeat for several).")
@pass_app
def runs_tag(app: AppContext, run_ref: str, tags: tuple[str, ...], remove: tuple[str, ...]):
    """Add tags to a run (or remove them with -r); with no tag, print its tags. Tags have no
    spaces or commas; `clara runs list --tag TAG` filters by them.

    Example: clara runs tag last baseline handbook ; clara runs tag last -r baseline
    """
    run = find_run(app.workspace(), run_ref)
    now = tag_run(run, add=tags, remove=remove) if tags or remove else \
        [str(t) for t in run.raw_status().get("tags") or []]
    click.echo(f"run {run.id}: tags {', '.join(now) or '(none)'}")


COMMANDS = [runs_group]
