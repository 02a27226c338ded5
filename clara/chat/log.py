"""The chat log of a workspace: every exchange appended to `chats/chat_log.jsonl` (full record,
settings nested) and `chats/chat_log.csv` (the same, flat, for spreadsheets).

Each row is appended in a single write, so a reader never sees half a record.
"""

from __future__ import annotations

import csv
import io as _io
import os
from pathlib import Path

from clara import io

JSONL_NAME = "chat_log.jsonl"
CSV_NAME = "chat_log.csv"

SETTINGS_FIELDS = ("temperature", "top_p", "max_tokens", "system", "multi_turn", "thinking",
                   "seed")
FIELDS = ("time", "session", "turn", "workspace", "model", "adapter", "kind", "documents",
          *SETTINGS_FIELDS, "prompt", "reply", "reasoning", "prompt_tokens",
          "generation_tokens", "prompt_tps", "generation_tps", "peak_memory", "latency", "ttft",
          "finish_reason")


class ChatLog:
    """Appends exchange records to the JSONL and CSV logs in `folder` (a workspace's chats/)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @property
    def jsonl_path(self) -> Path:
        return self.folder / JSONL_NAME

    @property
    def csv_path(self) -> Path:
        return self.folder / CSV_NAME

    def append(self, record: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        io.append_jsonl(self.jsonl_path, record)
        flat = {k: v for k, v in record.items() if k != "settings"}
        flat.update({k: record.get("settings", {}).get(k) for k in SETTINGS_FIELDS})
        if isinstance(flat.get("documents"), list):
            flat["documents"] = "|".join(str(d) for d in flat["documents"])
        buf = _io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore",
                                lineterminator="\n")
        new = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
        if new:
            writer.writeheader()
        writer.writerow({k: "" if flat.get(k) is None else flat.get(k) for k in FIELDS})
        # csv.writer quotes embedded newlines; the whole row goes out in one append.
        fd = os.open(self.csv_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, buf.getvalue().encode("utf-8"))
        finally:
            os.close(fd)

    def read(self) -> list[dict]:
        return io.read_jsonl(self.jsonl_path) if self.jsonl_path.is_file() else []

    def read_csv(self) -> list[dict]:
        if not self.csv_path.is_file():
            return []
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
