"""Failures of a widget's own thread workers, routed to the app's one error handler."""

from __future__ import annotations


class RoutesWorkerErrors:
    """A widget whose thread workers' failures reach the app's one error handler (a dialog).
    A worker's StateChanged does not bubble: a failure in a widget's worker was lost (the QA
    form cleared its status and said nothing)."""

    def on_worker_state_changed(self, event) -> None:
        from textual.worker import WorkerState

        if event.state == WorkerState.ERROR:
            self.app.show_error(event.worker.error)
