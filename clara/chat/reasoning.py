"""The reasoning block of a reply: split off (hidden unless asked for) or banned while generating.

The markers come from `clara.models.thinking.reasoning_markers` (the tokenizer and its chat
template say which block a model writes); this module adds what chat needs on top: a streaming
splitter, the logit bias that bans the block, and the template switches that turn it off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clara.models.thinking import ReasoningMarkers, reasoning_markers, split_reasoning

__all__ = ["ReasoningMarkers", "reasoning_markers", "split", "ban_bias", "off_template_kwargs",
           "ThinkSplitter", "Delta"]

BAN = float("-inf")


def split(text: str, markers: ReasoningMarkers | None) -> tuple[str | None, str]:
    """(reasoning or None, answer); an unfinished block is all reasoning, stripped of blanks."""
    reasoning, answer = split_reasoning(text, markers)
    return (reasoning.strip() if reasoning is not None else None), answer.strip()


def ban_bias(markers: ReasoningMarkers | None) -> dict[int, float]:
    """Logit bias that makes the opening (and closing) reasoning tokens impossible to sample."""
    if markers is None or not markers.ban_ids:
        return {}
    ids = set(markers.ban_ids)
    if len(markers.end_ids) == 1:
        ids |= set(markers.end_ids)
    return {int(i): BAN for i in ids}


def off_template_kwargs(markers: ReasoningMarkers | None) -> dict:
    """Chat-template switches that stop the template itself from opening a reasoning block."""
    return dict(markers.off_kwargs) if markers is not None else {}


@dataclass
class Delta:
    """A piece of streamed reply text: answer text, or reasoning text when `reasoning` is set."""

    text: str
    reasoning: bool = False


@dataclass
class ThinkSplitter:
    """Splits streamed text into reasoning and answer deltas as it arrives.

    It re-splits the whole text so far with the same rule as the final split, and only emits
    what cannot change any more: text that could still be the start of a marker is held back.
    """

    markers: ReasoningMarkers | None
    text: str = ""
    _sent: list = field(default_factory=lambda: ["", ""])  # emitted: reasoning, answer

    def _held(self, s: str) -> int:
        """How many trailing chars of `s` could begin a marker (so must wait)."""
        if self.markers is None:
            return 0
        hold = 0
        for marker in (self.markers.start, self.markers.end):
            for n in range(1, min(len(marker), len(s) + 1)):
                if s.endswith(marker[:n]):
                    hold = max(hold, n)
        return hold

    def feed(self, piece: str, final: bool = False) -> list[Delta]:
        self.text += piece
        reasoning, answer = split_reasoning(self.text, self.markers)
        reasoning = reasoning or ""
        out = []
        parts = ((reasoning, True), (answer, False))
        for slot, (s, is_reasoning) in enumerate(parts):
            # The answer waits until the block is closed or known absent; so does held text.
            end = len(s) if final else len(s) - self._held(s)
            if not is_reasoning and not final and self._answer_pending(reasoning):
                end = 0
            sent = self._sent[slot]
            # A split that reinterprets text already shown (a close marker with no opening one)
            # is left to the final reply; the stream never takes back what it showed.
            if end > len(sent) and s.startswith(sent):
                out.append(Delta(s[len(sent):end], is_reasoning))
                self._sent[slot] = s[:end]
        return out

    def _answer_pending(self, reasoning: str) -> bool:
        """True while the text may still turn out to open a reasoning block."""
        if self.markers is None:
            return False
        stripped = self.text.lstrip("\n")
        return len(stripped) < len(self.markers.start) and self.markers.start.startswith(stripped)

    def finish(self) -> list[Delta]:
        return self.feed("", final=True)
