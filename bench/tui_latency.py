"""Key-to-render latency of the workbench app while a real training runs on the same machine.

The app runs in a real terminal (tmux, 120x40). The benchmark sends keys and reads the screen
through one tmux control-mode client (`tmux -C`), waking when the pane writes output, until
the key's effect is on screen: a mode switch (F2..F9) until the header names the new mode, a
typed character until it shows in a text field (each once the one before is on screen), and
bursts of ten characters sent at once until all ten show. 140 switches a phase (p99 is the
second slowest; `max` is printed beside it), four phases in one run, the first being the
reference (`--phases`):

  idle        no training (the modes' first visits after the start fall here)
  sched-idle  a tiny LoRA training in the background under SCHED_IDLE: as the app starts one
              (clara.runs.worker_priority; nice 10 where there is no SCHED_IDLE)
  10          the same training at nice 10 (how the app started it before session 10, and
              how the CLI starts one)
  0           the same training at the app's own priority

Then quitting: a Chat reply is started (the model loads and generates in a thread worker) and
ctrl+q is sent at once; the time until the process has exited is measured.

The columns. `median`..`max`: key sent -> effect seen on screen (what a user waits). The app
runs with a probe (see `serve`) that notes when its event loop takes each key, when it hands a
frame to its terminal writer and when that frame is written, with the event loop's CPU time:
`app` is key taken -> the frame showing its effect written; `tmux` is key sent -> taken (tmux,
the pty, the app's input thread, keys ahead of it); `cpu` is the event loop's CPU time from
taking the key to handing that frame on (medians unless named); `runq` is the event loop's time
meanwhile spent runnable but waiting for a CPU other processes held (Linux schedstat). On a shared
machine `app` and `seen` grow with the load (`runq` says how much); `cpu` barely does: it is the
figure to compare work per key. `kchars`: the thousands of characters the app wrote to the
terminal from taking the key to that frame (what tmux has to read and parse). Under the table, every switch slower than 100 ms is listed with
its split and what ran meanwhile in the app: its thread workers (their CPU ms: Python in a thread
holds the GIL the event loop waits for) and full garbage collections (gc2: their wall ms; every
thread stops). `--profile FILE` writes a cProfile of the app's process per part of each phase;
`--trace` the timeline of every switch over 1 s (see Trace: the app's pty writes, batch
updates and dropped frames, this bench's reads, and each process's state every 5 ms).

Then each mode's first visit after the start (the keys come from 2 s after the first frame)
and, per phase with a training, the training's own speed (tokens/s by its own clock) for
`--quiet-s` seconds with the app idle, then while the keys came: what its priority costs it,
and its thread count.

Writes bench/results/tui_latency-DATE.json and .txt (git-ignored) and prints the table.
Needs tmux. One command, about 2-3 minutes (at load 10: 161 s): python bench/tui_latency.py

Figures (2 shared CPU cores, other sessions' work running: load 2-4; the same command,
`python bench/tui_latency.py`, back to back; before = commit df9b194, after = the branch app6 of
2026-11-30 12:33):

  before (ms)        what     n  median     p90     p99     max     app app p99    tmux     cpu
  idle               switch  35    72.6   380.9  1014.5  1014.5    60.4  1009.4     0.6    13.4
  idle               typing  20    16.5    18.0    50.7    50.7    12.8    47.7     0.4     7.4
  idle               burst    8   168.1   178.8   198.3   198.3   162.9   194.0     1.1    82.1
  training, nice 10  switch  35   107.5   193.7   735.3   735.3    79.7   577.3     0.6    16.6
  training, nice 10  typing  20    41.9    63.6   122.8   122.8    22.9    54.9     0.6     9.2
  training, nice 10  burst    8   366.1   449.6   458.3   458.3   328.9   451.1     1.8   106.8
  training, nice 0   switch  35    96.0   176.6   631.5   631.5    75.9   624.8     0.6    18.7
  training, nice 0   typing  20    49.3    63.1   120.6   120.6    43.1   112.7     0.5    10.1
  training, nice 0   burst    8   428.3   545.7   577.3   577.3   400.4   569.2     1.4   114.6
  quit during a chat reply, with a training running: 0.62 s

  after (ms)         what     n  median     p90     p99     max     app app p99    tmux     cpu
  idle               switch  35    28.0   455.1   662.8   662.8    13.0   574.7     0.6    10.9
  idle               typing  20    16.9    18.2    28.6    28.6    13.0    21.0     0.5     5.2
  idle               burst    8    18.1    20.2    25.7    25.7    12.9    20.9     1.0     8.9
  training, nice 10  switch  35    54.9   162.5   559.3   559.3    28.0   556.1     0.9    11.9
  training, nice 10  typing  20    17.5    25.6    32.3    32.3    11.2    26.7     1.8     4.7
  training, nice 10  burst    8    29.0    48.8   110.3   110.3    18.8    38.0     1.1     8.5
  training, nice 0   switch  35    62.8   191.1   650.5   650.5    35.2   218.8     0.9    14.2
  training, nice 0   typing  20    23.9    59.0   199.3   199.3    13.8    36.3     0.6     4.9
  training, nice 0   burst    8    65.1   121.3   174.4   174.4    23.7    82.6     1.9    10.6
  quit during a chat reply, with a training running: 0.84 s

Earlier the same day at load 5-9 (the typing figures then let a lone "a" on screen count as
typed): with the training at nice 10, switch median 287 -> 98 ms (app 122 -> 50 ms), typing
92 -> 35 ms, ten characters at once 787 -> 47 ms.

Branch app7 (2026-11-30 15:07, load 4-6 from other sessions, run at nice 5; the app's CPU per key
is the `cpu` column; `runq` its wait for a CPU):

  app7 (ms)          what     n  median     p90     p99     max     app app p99    tmux     cpu    runq
  idle               switch  35    67.3   473.3  1255.8  1255.8    52.3   737.5     2.7    10.2    15.0
  idle               typing  20    28.0    58.1   324.0   324.0    26.1    53.7     3.0     4.3     9.7
  idle               burst    8    32.0    40.0    41.3    41.3     nan     nan     nan     nan     nan
  training, nice 10  switch  35   158.1   415.8  1433.4  1433.4    79.3   255.9     4.3    14.0    32.6
  training, nice 10  typing  20    34.9    93.5   361.6   361.6    30.8   255.3     2.4     4.3    10.8
  training, nice 10  burst    8    71.7   105.9   135.8   135.8    45.5    64.0     1.4     6.2    13.6
  training, nice 0   switch  35    93.6   215.0   340.8   340.8    54.8   111.6     4.4    11.7    24.9
  training, nice 0   typing  20    56.9   176.6   611.4   611.4    28.7    74.1     1.3     3.6     8.5
  training, nice 0   burst    8    40.6   206.0   244.6   244.6    28.2   217.3     4.3     6.3    17.3
  quit during a chat reply, with a training running: 0.44 s

The slowest switches left with the training at nice 10 are outside the app: Chat 1433 ms of
which the app took 54 ms (key taken -> frame written), Data 416 ms with 162 ms writing the
frame to the pty (tmux reading slowly), Train 630 ms with 207 ms waiting for a CPU.

What made the slowest switches (branch app7, from the slow-switch lines under the table): a full
garbage collection walking every object of the built screens, 0.27 s of the event loop's CPU
(1.1 s of wall at load 9) at a random key; the screens' objects are now left out of collections
once built (gc.freeze) and a full collection runs in each pause of the typing (gc2: 7-35 ms). The
Runs loss plot, built by plotext and turned into styled lines on the event loop (30-40 ms of CPU
each time Runs was shown with new points, and every half second while shown): now built in a
thread. The Runs table, refilled when a run appeared, its cursor moved by index onto another run
that the screen then followed: now updated row by row, the cursor kept on its run. Train mounted
its four CLaRa forms (hundreds of fields) right after its first visit, 0.5-1 s on whatever mode
came next: now each when its tab is first shown. And the header's platform line imported mlx_lm
in a thread at start: 2.1 s of CPU holding the GIL in the app's first seconds (now mlx.core only).
The idle phase's p90/p99 are still first visits: the bench switches 2 s after the start, and
building every screen in the background (from the start, before any key) takes about 3 s of CPU
(Train 0.8 s, Data 0.5 s, Eval 0.45 s at load 6).

Where the time went, per key (in-process, `--profile`): typing into a form laid the whole screen
out on every key, twice: Input sets its scrollable width (a reactive that asks for a layout) and
the form's command line (a Static) asked for one on each update (TextInput, LiveText: 70% of a
key's CPU); the type-ahead queue handed each character on only after the previous one's frame,
so ten characters typed fast cost ten layouts and paints (characters into a text field now go
on at once: a burst costs one); and Textual holds every paint for 50 ms after a mode switch,
to mask a screen still composing (now only on a first visit not built in the background). A
screen built in the background was restyled and laid out on its first show (Train: 2.5-3.6 s
at load 10; now it is laid out in the background and not restyled: its widgets were styled as
they mounted), and did not get the terminal's width class (Train's help squeezed to 14
characters at 100 columns).

Branch app8 (2026-11-30 17:46, load 4-6 from other sessions, run at nice 5, with a nice-19
phase; `python bench/tui_latency.py --phases idle,10,19,0`):

  app8 (ms)          what     n  median     p90     p99     max     app app p99    tmux     cpu    runq  kchars
  idle               switch  35    61.4   169.1   461.5   461.5    47.4   241.2     0.8    11.5    15.2     8.3
  idle               typing  20    18.5    28.0    31.0    31.0    21.5    21.5     2.0     4.2     5.3     0.1
  training, nice 10  switch  35    72.3   162.8   362.0   362.0    63.4   165.2     0.9    14.0    30.7     8.4
  training, nice 10  typing  20    21.6    30.6    33.3    33.3    11.8    19.2     4.3     3.4     4.3     0.1
  training, nice 19  switch  35    67.8   112.8   201.6   201.6    46.6   108.1     1.1    13.5    18.9     8.7
  training, nice 0   switch  35    78.2   176.4   454.5   454.5    47.1   405.3     1.9    13.3    21.0     9.0
  the training meanwhile: 5,946 tokens/s at nice 10, 5,607 at nice 19, 5,906 at nice 0
  first visits after the start (ms): Workspaces 9 Data 64 Train 211 Runs 121 Chat 116 Eval 166
  Models 462

What changed (app8): a switch wrote 12-13 thousand characters (a whole frame, often followed
by a second identical one; a screen built before is shown by a partial update of nearly all of
it); the app now keeps the terminal's cells and writes only those that changed (tui/frames.py):
8.3 thousand a switch, 0.1 instead of 0.8 a typed key, at 2-3 ms of CPU a frame. The screens
are built from the first frame on, between keys, and rendered, focused and given their footer's
keys there too; a mode not built yet shows a placeholder at once (the Eval and Models rows
above: 213 and 259 characters written). The nice-19 phase was not clearly faster than nice 10
on this shared machine (the other sessions' load, not our training, held the CPU), and the
training ran at the same speed: the default stays 10.

The probe: before this branch a `tmux capture-pane` process ran every 4 ms; each look cost 17
ms of wall time and 2 ms of CPU at this load, a core taken from the app it measured. On a quiet
machine (load 1) that probe gave, with the app's training at nice 10: switch median 101 ms,
typing median 114 ms (main of 10:17). The control-mode client looks again every 2 ms for 50 ms
after tmux reports output: a look right after a report missed the change in 1 key of 3.
Branch app9 (2026-11-30 20:57, load 2-4 from other sessions, run at nice 5;
`python bench/tui_latency.py`):

  app9 (ms)          what     n  median     p90     p99     max     app app p99    tmux     cpu    runq  kchars
  idle               switch  35    34.4   128.8   245.7   245.7    20.9   115.2     0.9     8.1     6.5     8.2
  idle               typing  20    18.0    39.3    97.7    97.7    16.4    31.7     0.5     5.3     2.5     0.1
  idle               burst    8    16.6    18.1    39.1    39.1    12.2    12.3     1.6     7.7     4.1     0.1
  training, nice 10  switch  35    49.3   154.8   309.7   309.7    30.3   110.9     0.7     9.2    11.4     8.3
  training, nice 10  typing  20    20.6    55.5   236.1   236.1    14.1   146.8     3.5     5.4     5.3     0.1
  training, nice 10  burst    8    20.1    27.2    29.5    29.5     nan     nan     nan     nan     nan     nan
  training, nice 0   switch  35    68.0   179.7   496.1   496.1    38.6   113.2     2.3     9.4    14.3     8.5
  training, nice 0   typing  20    18.2    30.6    65.6    65.6    14.2    24.2     3.9     4.9     3.9     0.1
  training, nice 0   burst    8    28.7    34.3    35.1    35.1    17.5    18.5     6.6     7.0     4.0     0.1
  quit during a chat reply, with a training running: 0.48 s
  the training meanwhile: 7,593 tokens/s at nice 10, 7,533 at nice 0
  first visits after the start (ms): Workspaces 5 Data 42 Train 129 Runs 140 Chat 52 Eval 117
  Models 188

The app's own part of a switch with the training at nice 10 is now at most 111 ms (`app p99`);
the two slowest switches (Workspaces 310 ms, Eval 266 ms) spent 32 and 19 ms in the app and the
rest between the frame written and the look that saw it (tmux and this client, on a busy machine).

Why app8's medians rose (47-66 -> 77-89 ms with a training; 24-30 -> 43-47 idle, at the same CPU
per switch): a switch's frame came from the screen's update timer, one to three turns of the
event loop after the key. Textual paints a screen it shows in switch_mode's own layout of it, but
paints there only what moved, and a screen built (app8: in the background) or shown before had
moved nothing: that paint wrote a few cells (6-640 characters: the old screen with bits of the
new), and the whole screen followed when ScreenResume's refresh reached the update timer (16.7 ms
later, more under load). Keys typed meanwhile waited too: the type-ahead queue holds the next key
until the screen has painted after the last one (call_after_refresh), which Textual runs on the
screen's next message, and a paint from the update timer is no message. Now the switch's own
layout paints the whole screen (WorkbenchApp._prepare_whole_paint), the repaints that Textual
then asks for (the screen left, the screen resumed) are skipped, what waits for a paint runs
right after it, and a mode key goes on while the key before it settles. A/B on the same machine
state, the same switches against the tree before and after, alternating (3 x 35 switches each,
`/tmp` harness on the bench's functions; medians, ms):

  idle, load 4          seen median  p90   key->frame  event-loop CPU  process CPU/switch
  before (4a796da)          64.7      96.5     51.0         12.0             22.3
  after                     38.4      70.0     24.7          8.1             16.5
  training at nice 10, load 8
  before                   127.4     300.6     97.6         21.8             38.2
  after                     86.8     330.0     45.3         10.7             40.4

Between keys, with a training running, the app woke 65 times a second for screens no one saw:
an idle progress bar's pulse (30 a second: Runs and Eval, hidden), the Chat's loading indicator
(16), cursors blinking in the fields each hidden screen keeps focused, the demo banners. Hidden
screens' repeating timers now wait until they are shown: 6 wake-ups a second. The app's CPU with
a training running and no key, on Data: 20-30 -> 9-11 ms/s. On Runs (shown) it was 66-68 ms/s;
the loss plot of a training run is now built at most once a second (a thread holding the GIL
10-15 ms at each poll of 0.5 s), 59-75 ms/s after, with the training 40 % faster meanwhile (more
rows to read): no clear change. A slower poll of the run follower while Runs is hidden was tried
and dropped (the tests waited on it).

Branch app10 (2026-11-30, load 8-13 from other sessions, run at nice 10: the app at nice 10,
the "nice 10" training at nice 19; the two priorities alternated in one run, `python
bench/tui_latency.py --phases sched-idle,10,sched-idle,10 --typed 10 --bursts 4`; switches):

  22:43, SCHED_IDLE only (the first phase holds the modes' first visits after the start)
  app10 (ms)         what     n  median     p90     p99     max     app app p99    tmux     cpu    runq runq p99  kchars
  training, SCHED_IDLE switch 140    42.3   149.2   708.4   789.6    27.8   405.7     1.1     9.8    10.5   163.4     8.4
  training, nice 10  switch 140    50.0   169.6   409.1   471.9    35.9   288.8     0.8    10.9    14.2   248.4     8.5
  training, SCHED_IDLE (again) switch 140    43.0    79.4   152.9   793.0    32.6   133.4     0.8    10.5    12.5    73.1     8.5
  training, nice 10 (again) switch 140    58.4   148.1   394.0   506.6    40.5   244.1     1.5    12.2    16.4   217.9     8.5
  training (tokens/s, app idle / keys coming): SCHED_IDLE 11,205 / 7,286 and 11,082 / 6,728;
  nice 10 10,392 / 7,202 and 8,843 / 6,078

  23:08, SCHED_IDLE and the worker's session at autogroup nice 10 (what the app does now)
  training, SCHED_IDLE switch 140    43.6    81.6   148.5   166.5    25.7    83.1     1.3     8.3    10.2    60.0     8.4
  training, nice 10  switch 140    46.2    72.1   240.8   252.1    32.5   197.7     0.6     9.3    14.4    64.4     8.5
  training, SCHED_IDLE (again) switch 140    45.6    76.7   174.0   202.9    31.4    99.4     1.3    10.3    12.6    44.9     8.5
  training, nice 10 (again) switch 140    61.4   137.8   476.0   573.7    39.6   438.4     2.8    10.0    17.6   350.1     8.5
  training (tokens/s, app idle / keys coming): SCHED_IDLE 986 / 502 and 610 / 424; nice 10
  7,604 / 5,127 and 7,162 / 4,751

Session 9 left the switch p99 with a training at nice 10 over 250 ms on a quiet machine (271-340
ms) while the app's own CPU per switch was 9-12 ms: the slow switches waited for a CPU beside the
training. Two reasons. A niced task still competes by weight (nice 10 against 0: 1 to 9, and the
training runs 10 threads); a SCHED_IDLE one gives the CPU up at once to any other task that
wakes. And this kernel (like most desktops) has autogroups: the CPU is shared between sessions
first, and niceness counts only within one. The app starts a training in a session of its own
(it outlives the app), so its nice 10 weighed as much as the app's whole session: nice 10 and
nice 0 measured alike in every session before. The app now starts trainings under SCHED_IDLE
and puts the worker's session at autogroup nice 10 (clara.runs.worker_priority and
lower_autogroup; `CLARA_WORKER_PRIORITY=idle|0-19`; the CLI keeps nice 10 and its session as
they were). SCHED_IDLE alone took the event loop's runq p99 from 218-248 to 73-163 ms; with the
autogroup, switch p99 149 and 174 ms against 241 and 476 at nice 10 in the same run, at a load
of 10 from other sessions (runq p99 45-60 against 64-350). The cost: beside other sessions' busy
processes the training now gets what they leave (here 0.6-1.0k tokens/s against 7.2-7.6k at
nice 10: four other sessions kept both cores busy); on a machine where only the app and the
training run, it gets every cycle the app does not use (the quiet re-run's "app idle" figures
say how much). Autogroup nice 19 was tried first: the training did not get through its start
in 2.5 minutes at that load.

Branch app11 (2026-12-01): the rare 3.3-4.2 s switch (4 of 19 quiet runs of session 10, one
switch each, in the SCHED_IDLE phase) was the app, not the terminal. `--trace` caught one (load
14-19, `--phases idle,sched-idle --switches 30`, 1 of 23 traced runs): the key taken at 28 ms,
a paint at 47 ms that wrote nothing, then a partial frame (5,448 characters: a table) at 113 ms
without the header; then for 4 s the app idle in epoll, its writer idle, tmux idle, nothing
unread in this bench's pipe, the bench looking every 0.5 s; the header came with an unrelated
whole repaint at 4,176 ms. Textual drops a frame painted while a batch update is open
(App._display), and Markdown.update holds one across awaits (the Runs report, refilled while a
training runs); the repaints after it were skipped as already done (the whole-screen paint of a
switch, session 9). The app now paints the screen again when the batch ends
(WorkbenchApp._end_batch; test_modes_switch_by_keys..., which fails without it). The split
"write 3479 ms" of session 10 was the last paint before the frame seen, not a blocked write.

The reader of this bench made one read() call per byte of tmux's output (strace: 12,915 reads
for 12,813 bytes): on a loaded machine it fell up to 1.3 s behind what the app had written,
counted as the app's latency. It now reads 64 KB at a time. A/B, the same settings alternating
(old reader, new reader; 30 switches a phase, load 14-19 from other sessions; "lag" is the key
seen minus delivered minus the app's part up to the frame written: this bench's own share;
medians, ms):

  reader   SCHED_IDLE switch median   its lag median        idle lag median    bench CPU-s a run
  old      65.7 / 325.5 / 440.0       22.4 / 212.9 / 232.7  15.7 / 16.0 / 35.5  14.1 / 12.6 / 11.9
  new      43.0 / 58.7 / 50.8         3.3 / 2.2 / 1.1       5.9 / 2.0 / 4.7     12.1 / 10.3 / 13.9

(the bench's CPU per run, workspace and model building included, is within the noise)

tmux stops reading a pane when a control client falls behind (~100 KB unread: a client that
read nothing for 4 s blocked the pane's writer for 3.5 s); `--trace` prints, for each switch
over 1 s, the most bytes left unread in this bench's pipe and the longest time without a read,
so a stall of the bench itself shows as such.

Earlier work (branch app5): Textual's Footer rebuilt all its keys on every switch; a form looked
each field up with a DOM query on every keystroke; the Train preview planned on the event loop;
every mode refilled its tables and Selects on each visit; a hidden Runs mode redrew its plot;
and a mode's first visit reparsed every stylesheet three times.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SESSION = "clara-bench"
MODES = [("f2", "Workspaces"), ("f3", "Data"), ("f4", "Train"), ("f5", "Runs"), ("f7", "Chat"),
         ("f8", "Eval"), ("f9", "Models")]


class Tmux:
    """A tmux control-mode client (`tmux -C`) of the session: keys are sent and the screen is read
    over one pipe, and the client waits for the pane's next output instead of polling. Polling
    with a `tmux capture-pane` process every few ms cost 17 ms of wall time per look on a busy
    machine (a fork, an exec and a tmux client each time) and a core of CPU, taken from the app
    it measured."""

    def __init__(self, session: str, trace: bool = False) -> None:
        import queue
        import threading

        self.session = session
        # --trace: (perf_counter(), bytes) of every line read, and the reader's thread id
        self.reads: list[tuple[float, int]] | None = [] if trace else None
        self.reader_tid = 0
        self.proc = subprocess.Popen(["tmux", "-C", "attach", "-t", session, "-f", "ignore-size"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.replies: queue.Queue = queue.Queue()
        self.output = threading.Event()  # set when the pane wrote something
        threading.Thread(target=self._read, daemon=True).start()
        while "ready" not in self.command("display-message -p ready"):
            pass  # the attach's own reply comes first

    def _read(self) -> None:
        import threading

        self.reader_tid = threading.get_native_id()
        block: list[str] | None = None
        for raw in self._lines():
            if block is None:
                if raw.startswith(b"%output"):
                    self.output.set()
                elif raw.startswith(b"%begin"):
                    block = []
            elif raw.startswith((b"%end", b"%error")):
                self.replies.put("\n".join(block))
                block = None
            else:
                block.append(raw.decode("utf-8", "replace"))
        self.replies.put("")  # the client ended

    def _lines(self):
        """The client's lines, read 64 KB at a time. `for line in proc.stdout` on this unbuffered
        pipe made one read() call per byte (strace: 12,915 reads for 12,813 bytes), for the
        pane's output and every screen looked at: on a busy machine this reader fell up to
        1.3 s behind what the app had written (--trace: 12-21 KB left unread in the pipe, the
        bench waiting for a CPU), and that showed as the app's latency. Had it fallen ~100 KB
        behind, tmux would have stopped reading the app's pty (its flow control for control
        clients: a client that read nothing for 4 s blocked a pane's writer for 3.5 s)."""
        fd, rest = self.proc.stdout.fileno(), b""
        while chunk := os.read(fd, 1 << 16):
            if self.reads is not None:
                self.reads.append((time.perf_counter(), len(chunk)))
            *lines, rest = (rest + chunk).split(b"\n")
            yield from lines

    def command(self, line: str) -> str:
        self.proc.stdin.write(line.encode() + b"\n")
        return self.replies.get(timeout=60)

    def send(self, *keys: str) -> None:
        self.command(f"send-keys -t {self.session} " + " ".join(keys))

    def screen(self) -> str:
        return self.command(f"capture-pane -p -t {self.session}")

    def wait(self, predicate, timeout: float = 30.0) -> float:
        """perf_counter() when predicate(screen text) first held after a look (inf: timeout).
        tmux reports a pane's output a moment before its screen shows all of it (a look right
        after a report missed the change in 1 key of 3): for 50 ms after a report the screen is
        looked at every 2 ms, else on the next report."""
        deadline = time.perf_counter() + timeout
        reported = time.perf_counter()
        while True:
            self.output.clear()  # before the look: output landing after it wakes the next wait
            if predicate(self.screen()):
                return time.perf_counter()
            now = time.perf_counter()
            if now >= deadline:
                return float("inf")
            soon = now - reported < 0.05
            if self.output.wait(min(deadline - now, 0.002 if soon else 0.5)):
                reported = time.perf_counter()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True).stdout


def key_latency(client: Tmux, key: str, predicate) -> tuple[float, float]:
    """(sent, seen): perf_counter() before the key was sent and when its effect was on screen."""
    t0 = time.perf_counter()
    client.send(key)
    return t0, client.wait(predicate)


def header_says(title: str):
    return lambda text: f" clara  {title} " in (text.splitlines() or [""])[0]


def build_workspace(root: Path):
    """A workspace with a tiny model (hidden 64, 2 layers) and a small text dataset."""
    from clara.data.datasets import write_dataset
    from clara.models.tiny import TinyConfig, build_tiny_model
    from clara.workspace import Workspace

    ws = Workspace(root, "bench").create(description="tui latency benchmark")
    words = ("mill harbour bell river tower glass Alia Borun Cetra painted built repaired "
             "rang in the a of and 1801 1812 1790").split()
    texts = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(40)) for i in range(80)]
    build_tiny_model(ws.models_dir / "tiny", texts,
                     TinyConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=512, seed=0))
    write_dataset(ws, "notes", "cpt", {"train": [{"text": t} for t in texts[:70]],
                                       "valid": [{"text": t} for t in texts[70:]]})
    return ws


def start_training(ws, priority: str, events: list | None = None):
    """A long tiny LoRA run, launched as the Train screen launches one, at `priority` (see
    clara.runs.worker_priority: "idle" is SCHED_IDLE, a number a niceness). `events`: where
    (perf_counter(), what) of its start and first logged step go (--trace)."""
    from clara.runs import start_worker
    from clara.train.launch import lora_run

    run = lora_run(ws, {"model": "tiny", "data": "notes", "mode": "cpt", "iters": 100000,
                        "batch_size": 4, "max_seq_length": 64, "val_every": 200,
                        "save_every": 100000})
    if events is not None:
        events.append((time.perf_counter(), f"training started ({priority})"))
    proc = start_worker(run, detach=True, priority=priority)
    deadline = time.monotonic() + 300
    metrics = run.path / "metrics.jsonl"
    while not (metrics.is_file() and metrics.stat().st_size > 0):  # training has begun
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"training did not start: see {run.path / 'log.txt'}")
        time.sleep(0.5)
    if events is not None:
        events.append((time.perf_counter(), "training: its first step logged"))
    return run, proc


def progress(run) -> tuple[float, float]:
    """(tokens, elapsed_s) of the training's newest metrics row: two of them, some time apart,
    give its speed in between."""
    import json

    with open(run.path / "metrics.jsonl", "rb") as f:
        f.seek(max(0, f.seek(0, 2) - 4096))
        rows = [line for line in f.read().decode("utf-8", "replace").splitlines()
                if '"tokens"' in line]
    for line in reversed(rows):
        try:
            row = json.loads(line)
        except ValueError:  # the first line read may be cut
            continue
        return float(row["tokens"]), float(row["elapsed_s"])
    return float("nan"), float("nan")


def speed(a: tuple[float, float], b: tuple[float, float]) -> float:
    return (b[0] - a[0]) / (b[1] - a[1]) if b[1] > a[1] else float("nan")


def threads(pid: int) -> int:
    """How many threads the process runs (the training's BLAS and MLX threads)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def stop_training(run, proc) -> None:
    from clara.runs import request_stop

    request_stop(run)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def serve(root: Path, log: Path, profile: Path | None, trace: bool = False) -> None:
    """Run the app (in the benchmark's tmux) with a probe: every key the app's event loop takes
    and every frame it hands to its terminal writer thread are noted with the time and the event
    loop's CPU time, and when the writer has written a frame, so a key's latency splits into
    delivery (tmux, the terminal, the input thread, keys ahead of it), the app's own work (up to
    the frame written) and the probe's look. The notes are kept in memory and
    written to `log` when SIGUSR1 comes (a write per note cost the app 1 ms a key on a busy
    machine). `profile`: cProfile the app from SIGUSR2 to the next SIGUSR1."""
    import cProfile
    import threading

    from textual import events
    from textual.app import App

    from tui.app import WorkbenchApp, run_app

    from collections import deque

    from textual.drivers._writer_thread import WriterThread

    notes: deque[str] = deque()  # appended by the event loop and the terminal writer thread
    profiler = [cProfile.Profile()]

    def stamp(what: str) -> None:
        # the thread's time waiting for a CPU while runnable (Linux schedstat): how much of
        # a key's wait is other processes' load rather than the app's own work
        with open("/proc/thread-self/schedstat", "rb") as f:
            runq = int(f.read().split()[1]) / 1e9
        notes.append(f"{what} {time.perf_counter():.6f} {time.thread_time():.6f} {runq:.6f}\n")

    on_event = WorkbenchApp.on_event

    async def probed_on_event(self, event):
        if isinstance(event, events.Key) and not event.is_forwarded:
            stamp(f"key {event.key}")
        await on_event(self, event)

    display = App._display

    def probed_display(self, screen, renderable):
        if trace and renderable is not None and self._batch_count:
            stamp("dropped -")  # Textual drops a frame while a batch update is open
        display(self, screen, renderable)
        if renderable is not None:
            stamp("paint -")

    begin_batch, end_batch = App._begin_batch, App._end_batch

    def probed_begin_batch(self):  # batch updates open and closed (--trace)
        begin_batch(self)
        stamp(f"batch+ {self._batch_count}")

    def probed_end_batch(self):
        stamp(f"batch- {self._batch_count}")
        end_batch(self)

    def write_frames(self):  # Textual's WriterThread.run, noting when a frame has been written
        write, flush, get, qsize = self._file.write, self._file.flush, self._queue.get, \
            self._queue.qsize
        size = 0  # characters written since the last flush: what the terminal has to read
        if trace:  # its thread id, for the trace's sampler (its state and kernel wait channel)
            notes.append(f"writer-tid {threading.get_native_id()} 0 0 0\n")
        while (text := get()) is not None:
            if trace:  # every write() and flush() into the pty, from start to end
                stamp(f"wbeg {len(text)}")
                write(text)
                stamp("wend -")
            else:
                write(text)
            size += len(text)
            if qsize() == 0:
                if trace:
                    stamp("fbeg -")
                flush()
                stamp(f"written {size}")
                size = 0
        flush()

    def start(*_):
        profiler[0] = cProfile.Profile()
        profiler[0].enable()

    def flush(*_):
        if profile is not None:
            profiler[0].disable()
            profiler[0].dump_stats(str(profile))
        with log.open("a") as out:
            if trace:  # the app's threads by name, for the trace's sampler
                for t in threading.enumerate():
                    out.write(f"thread {t.native_id} {t.name.replace(' ', '_')} 0 0\n")
            while notes:
                out.write(notes.popleft())
            out.write("flushed\n")

    from textual.worker import Worker

    run_threaded = Worker._run_threaded

    async def probed_run_threaded(self):  # each thread worker's wall span and its CPU time
        work, name = self._work, (self.group or self.name or "worker").replace(" ", "_")
        if callable(work) and not asyncio.iscoroutinefunction(getattr(work, "func", work)):
            def timed():
                t0, c0 = time.perf_counter(), time.thread_time()
                try:
                    return work()
                finally:
                    notes.append(f"worker {name} {t0:.6f} {time.perf_counter():.6f} "
                                 f"{time.thread_time() - c0:.6f}\n")
            self._work = timed
        return await run_threaded(self)

    import asyncio
    import gc

    gc_started = [0.0]

    def gc_pause(phase, info):  # each garbage collection of the app: a pause of every thread
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif info["generation"] == 2:
            notes.append(f"gc2 - {gc_started[0]:.6f} {time.perf_counter():.6f} 0\n")

    gc.callbacks.append(gc_pause)
    Worker._run_threaded = probed_run_threaded
    WorkbenchApp.on_event = probed_on_event
    App._display = probed_display
    WriterThread.run = write_frames
    if trace:
        App._begin_batch, App._end_batch = probed_begin_batch, probed_end_batch
    signal.signal(signal.SIGUSR1, flush)
    if profile is not None:
        signal.signal(signal.SIGUSR2, start)
    run_app(root, "bench")


def flush_probe(pid: int, log: Path) -> None:
    """Have the app write its probe's notes (and its profile) now; wait until it has."""
    def flushed() -> int:
        return log.read_text().count("flushed\n") if log.is_file() else 0

    before = flushed()
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while flushed() == before and time.monotonic() < deadline:
        time.sleep(0.02)


def start_app(root: Path, tmp: Path, profile: Path | None = None,
              trace: bool = False) -> tuple[Tmux, Path]:
    tmux("kill-session", "-t", SESSION)
    log, marker, pidfile = tmp / "probe.log", tmp / "quit-marker", tmp / "app.pid"
    extra = (f" --profile {profile}" if profile else "") + (" --trace" if trace else "")
    cmd = (f"echo $$ > {pidfile}; exec {sys.executable} {Path(__file__).resolve()} --serve {root} "
           f"--log {log}{extra}")
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40",
         f"sh -c '{cmd}'; date +%s.%N > {marker}")
    client = Tmux(SESSION, trace)
    if client.wait(header_says("Workspaces"), timeout=120) == float("inf"):
        raise SystemExit("the app did not start:\n" + client.screen())
    time.sleep(2.0)  # the first screen's workers settle
    return client, log


# where a thread of ours sleeps when all is well (the GIL or a lock: futex; an event loop; a
# sleep; a pipe read); any other wait, or D, has its kernel stack sampled (--trace)
USUAL_WAITS = {"0", "-", "futex_do_wait", "do_epoll_wait", "poll_schedule_timeout.constprop.0",
               "hrtimer_nanosleep", "anon_pipe_read", "do_select", "do_sys_poll"}


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def sample(out: Path, watch: Path) -> None:
    """--trace's sampler (a process of its own at the bench's priority, so a stalled bench or
    app does not stall it): every 5 ms, each task named in `watch` (lines "label pid tid", or
    "pipe pid fd": the bytes waiting in that process's pipe, unread) as "t label state run_s
    wait_s wchan" (Linux: /proc state R/S/D, schedstat's time run and waited runnable, the
    kernel function a sleeping task waits in), and the machine's CPU, memory and IO pressure
    (stall totals, us); a label ending in "-": every thread of that pid. Written to `out` at
    SIGTERM."""
    import fcntl
    import termios

    rows: list[str] = []
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    tasks: dict[str, tuple[str, str]] = {}
    pipes: dict[str, int] = {}
    checked = 0.0
    sweep = 0
    buf = bytearray(4)
    parent = os.getppid()
    while not stop[0] and os.getppid() == parent:  # the bench may have been killed
        now = time.perf_counter()
        if now - checked > 0.1:  # the bench adds a training's pid when it starts one
            checked = now
            for line in watch.read_text().splitlines() if watch.is_file() else []:
                label, pid, tid = line.split()
                if label.startswith("pipe") and label not in pipes:
                    with contextlib.suppress(OSError):
                        pipes[label] = os.open(f"/proc/{pid}/fd/{tid}",
                                               os.O_RDONLY | os.O_NONBLOCK)
                elif not label.startswith("pipe"):
                    tasks[label] = (pid, tid)
        sweep += 1  # every thread of a process: each 4th look (20 ms), to keep this cheap
        every = [(f"{label}{tid}", pid, tid) for label, (pid, _) in tasks.items()
                 if label.endswith("-") and sweep % 4 == 0
                 for tid in _listdir(f"/proc/{pid}/task")]
        for label, pid, tid in [*((lb, p, t) for lb, (p, t) in tasks.items()
                                  if not lb.endswith("-")), *every]:
            base = f"/proc/{pid}/task/{tid}/"
            try:
                with open(base + "stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0].decode()
                with open(base + "schedstat", "rb") as f:
                    run_ns, wait_ns = f.read().split()[:2]
                with open(base + "wchan", "rb") as f:
                    wchan = f.read().decode() or "-"
            except OSError:
                continue
            rows.append(f"{now:.6f} {label} {state} {int(run_ns) / 1e9:.6f} "
                        f"{int(wait_ns) / 1e9:.6f} {wchan}\n")
            if state == "D" or wchan not in USUAL_WAITS:  # where in the kernel it waits
                with contextlib.suppress(OSError), open(base + "stack", "rb") as f:
                    frames = [ln.split()[-1].split(b"+")[0].decode()
                              for ln in f.read().splitlines()[:8]]
                    rows.append(f"{now:.6f} stack-{label} {'<'.join(frames)}\n")
        for label, fd in pipes.items():
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, termios.FIONREAD, buf)
                rows.append(f"{now:.6f} {label} {int.from_bytes(buf, sys.byteorder)}\n")
        for what in ("cpu", "memory", "io"):
            with contextlib.suppress(OSError), open(f"/proc/pressure/{what}", "rb") as f:
                rows.append(f"{now:.6f} psi-{what} {f.readline().split()[-1][6:].decode()}\n")
        time.sleep(0.005)
    out.write_text("".join(rows))


class Trace:
    """--trace: what a stalled frame waited on. The app's writer thread notes each write() and
    flush() into the pty (serve), the control-mode reader each line it read (Tmux.reads), and a
    sampler process (sample) the state of the app's writer and event loop, tmux's server and
    control client, this bench's reader, the training, and the bytes left unread in this
    bench's pipe from the control client. `report` prints the timeline of each slow switch."""

    def __init__(self, tmp: Path, client: Tmux, pid: int, log: Path) -> None:
        self.tmp, self.client, self.events = tmp, client, []
        flush_probe(pid, log)  # the writer thread's id
        writer = next(line.split()[1] for line in log.read_text().splitlines()
                      if line.startswith("writer-tid"))
        server = tmux("display-message", "-p", "-t", SESSION, "#{pid}").strip()
        self.watch = tmp / "trace-watch"
        self.watch.write_text(
            f"app-loop {pid} {pid}\napp-writer {pid} {writer}\napp- {pid} 0\n"
            f"tmux-server {server} {server}\n"
            f"tmux-client {client.proc.pid} {client.proc.pid}\n"
            f"bench-reader {os.getpid()} {client.reader_tid}\n"
            f"bench-main {os.getpid()} {os.getpid()}\n"
            f"pipe-unread {os.getpid()} {client.proc.stdout.fileno()}\n")
        self.out = tmp / "trace-samples"
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()),
                                      "--sample", str(self.out), "--log", str(self.watch)])

    def training(self, proc) -> None:
        """Watch a training (its events come from start_training)."""
        with self.watch.open("a") as f:
            f.write(f"training {proc.pid} {proc.pid}\ntraining- {proc.pid} 0\n")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def verdict(self, sent: float, seen: float, samples: list[list[str]]) -> str:
        """Between the key sent and seen: the most bytes left unread in this bench's pipe from
        tmux (a bench that does not read: tmux then stops reading the app's pty), the longest
        time without a read, and where the app's writer thread and tmux's server waited (the
        kernel functions seen, with how many looks)."""
        unread = [int(p[2]) for p in samples if p[1] == "pipe-unread" and
                  sent <= float(p[0]) <= seen]
        reads = [t for t, _ in self.client.reads or [] if sent <= t <= seen]
        gap = max((b - a for a, b in zip([sent, *reads], [*reads, seen])), default=seen - sent)
        waits = {}
        for p in samples:
            if p[1] in ("app-writer", "tmux-server", "bench-reader") and len(p) == 6 \
                    and sent <= float(p[0]) <= seen:
                key = f"{p[1]} {p[2]}:{p[5]}"
                waits[key] = waits.get(key, 0) + 1
        return (f"bench pipe unread max {max(unread, default=0) / 1000:.1f} KB, longest "
                f"without a read {1000 * gap:.0f} ms; "
                + ", ".join(f"{k} x{n}" for k, n in sorted(waits.items(), key=lambda x: -x[1])))

    def report(self, keys: list[tuple[float, float]], names: list[str], log: Path,
               over_s: float = 1.0) -> str:
        """The timeline (ms from the key sent) of each switch slower than `over_s`, and of the
        slowest one: the app's key, paints and pty writes, the bench's reads (bytes per 10 ms),
        each sampled task's state changes, the unread pipe, pressure stalls."""
        slow = [i for i, (a, b) in enumerate(keys) if b - a > over_s]
        slowest = max(range(len(keys)), key=lambda i: keys[i][1] - keys[i][0])
        notes = [line.split() for line in log.read_text().splitlines()]
        thread_names = {}
        for parts in notes:
            if parts[0] == "thread" and len(parts) == 5:
                for prefix in ("app-", "stack-app-"):
                    thread_names[prefix + parts[1]] = f"{prefix}{parts[2]}({parts[1]})"
        samples = [line.split() for line in self.out.read_text().splitlines()] \
            if self.out.is_file() else []
        out = []
        for i in sorted(set(slow) | {slowest}):
            sent, seen = keys[i]
            lo, hi = sent - 0.3, seen + 0.3
            ms = lambda t: f"{1000 * (float(t) - sent):9.1f}"  # noqa: E731
            lines = [f"switch {i} ({names[i]}): {1000 * (seen - sent):.0f} ms; "
                     + self.verdict(sent, seen, samples)]
            for parts in notes:
                if len(parts) == 5 and parts[0] in ("key", "paint", "wbeg", "wend", "fbeg",
                                                    "written", "worker", "gc2", "dropped",
                                                    "batch+", "batch-") \
                        and lo <= float(parts[2]) <= hi:
                    lines.append((float(parts[2]), f"{ms(parts[2])} app {' '.join(parts[:2])}"))
            reads = [(t, n) for t, n in (self.client.reads or []) if lo <= t <= hi]
            bins: dict[int, list[int]] = {}
            for t, n in reads:
                b = bins.setdefault(int((t - sent) * 100), [0, 0])
                b[0] += 1
                b[1] += n
            for b, (count, size) in sorted(bins.items()):
                lines.append((sent + b / 100, f"{ms(sent + b / 100)} bench read {count}x "
                                              f"{size} B"))
            gaps = sorted(((b - a, a) for (a, _), (b, _) in zip(reads, reads[1:])),
                          reverse=True)[:3]
            for gap, at in gaps:
                lines.append((at, f"{ms(at)} bench reads: a gap of {1000 * gap:.0f} ms"))
            last: dict[str, tuple] = {}
            for parts in samples:
                t, label = float(parts[0]), parts[1]
                if not lo <= t <= hi:
                    continue
                if label.startswith(("training-", "stack-training-")) and parts[2] != "D" \
                        and not label.startswith("stack-"):
                    continue  # its ten threads come and go all the time: only D (and stacks)
                label = thread_names.get(label, label)
                key = (parts[2], parts[-1]) if len(parts) == 6 else tuple(parts[2:])
                if label.startswith("stack-"):
                    key = (parts[2],)
                if label.startswith("psi"):
                    key = (int(parts[2]) // 100000,)  # a change of 0.1 s of stall
                if last.get(label, (None,))[0:] != key:
                    extra = (f" run {parts[3]} waited {parts[4]}" if len(parts) == 6 else "")
                    lines.append((t, f"{ms(t)} {label} {' '.join(key)}{extra}"
                                  if not label.startswith("psi") else
                                  f"{ms(t)} {label} total {int(parts[2]) / 1e6:.3f} s"))
                    last[label] = key
            for t, what in self.events:
                if lo - 30 <= t <= hi:
                    lines.append((t, f"{ms(t)} {what}"))
            head, rest = lines[0], sorted(lines[1:], key=lambda x: x[0])
            out.append("\n".join([head, *(r for _, r in rest)]))
        return "\n\n".join(out)


def app_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def split(keys: list[tuple[float, float]], log: Path) -> dict:
    """Each key's (sent, seen) split by the probe's notes: delivered (sent -> the event loop took
    it), app (took it -> the frame on screen when the key's effect was seen was written to the
    terminal), cpu (the event loop's CPU time from taking the key to handing that frame on),
    runq (the event loop's time meanwhile waiting, runnable, for a CPU that other processes
    held), write (that frame handed to the writer thread -> written to the terminal: a slow
    reader of the pty shows here). One entry per key, None where the probe did not see the app
    take it."""
    notes: dict[str, list[tuple[float, ...]]] = {"key": [], "paint": [], "written": []}
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] in notes:
            size = float(parts[1]) if parts[1].isdigit() else 0.0
            notes[parts[0]].append((*map(float, parts[2:]), size))
    out = {"delivered_s": [], "app_s": [], "cpu_s": [], "runq_s": [], "write_s": [],
           "chars": []}
    for sent, seen in keys:
        took = next((k for k in notes["key"] if k[0] >= sent), None)
        written = max((w for w in notes["written"] if w[0] <= seen), default=None)
        if took is not None and (written is None or written[0] < took[0]):
            # tmux can show a frame before the writer thread has noted it written: the first
            # frame written after the key, within 50 ms of the look that saw it
            written = next((w for w in notes["written"] if took[0] <= w[0] <= seen + 0.05),
                           None)
        paint = written and max((p for p in notes["paint"] if p[0] <= written[0]), default=None)
        if took is None or paint is None or paint[0] < took[0]:
            # the probe saw it before the app noted it (a key the app did not take)
            for values in out.values():
                values.append(None)
            continue
        out["delivered_s"].append(took[0] - sent)
        out["app_s"].append(written[0] - took[0])
        out["cpu_s"].append(paint[1] - took[1])
        out["runq_s"].append(paint[2] - took[2])
        out["write_s"].append(written[0] - paint[0])  # the frame handed on -> written to the pty
        # the characters written to the terminal from taking the key up to that frame
        out["chars"].append(sum(w[3] for w in notes["written"] if took[0] < w[0] <= written[0]))
    return out


def worker_spans(log: Path) -> list[tuple[str, float, float, float]]:
    """(name, start, end, CPU seconds) of every thread worker of the app that has ended, and
    (gc2, start, end, 0) of every full garbage collection."""
    out = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] in ("worker", "gc2"):
            out.append((parts[1] if parts[0] == "worker" else "gc2", *map(float, parts[2:])))
    return out


def slow_keys(keys: list[tuple[float, float]], names: list[str], log: Path,
              over_s: float = 0.1) -> list[dict]:
    """The keys whose effect took over `over_s` to show: the probe's split of each (ms) and the
    app's thread workers that ran meanwhile (a worker's Python holds the GIL the event loop
    waits for)."""
    spans = worker_spans(log)
    parts = split(keys, log)
    out = []
    for i, ((sent, seen), name) in enumerate(zip(keys, names)):
        if seen - sent <= over_s:
            continue
        ran = [f"{w}:{1000 * cpu:.0f}" if w != "gc2" else f"gc2:{1000 * (b - a):.0f}"
               for w, a, b, cpu in spans if a < seen and b > sent]
        out.append({"key": name, "ms": round(1000 * (seen - sent), 1), "workers": ran,
                    **{k.removesuffix("_s"): None if v[i] is None else
                       round(1000 * v[i] if k.endswith("_s") else v[i], 1)
                       for k, v in parts.items()}})
    return out


class Profiled:
    """cProfile the app (see serve) over a `with` block, its stats written to `path`."""

    def __init__(self, pid: int, log: Path, profile: Path | None, path: str) -> None:
        self.pid, self.log, self.profile, self.path = pid, log, profile, path

    def __enter__(self):
        if self.profile:
            os.kill(self.pid, signal.SIGUSR2)

    def __exit__(self, *exc):
        if self.profile:
            flush_probe(self.pid, self.log)
            if self.profile.is_file():
                self.profile.rename(self.path)


def phase(client: Tmux, log: Path, pid: int, switches: int, typed: int, bursts: int,
          profile: Path | None = None, name: str = "") -> dict:
    """Mode switches round the F-keys, then characters typed into the Data build name one at a
    time (each once the one before is on screen), then ten at a time."""
    part = lambda what: Profiled(pid, log, profile, f"{profile}.{name}.{what}")  # noqa: E731
    cpu0 = app_cpu_s(pid)
    switch = []
    i = 0
    with part("switch"):
        while len(switch) < switches:
            key, title = MODES[i % len(MODES)]
            i += 1
            switch.append(key_latency(client, key.upper(), header_says(title)))
    switch_cpu = app_cpu_s(pid) - cpu0
    key_latency(client, "F3", header_says("Data"))
    client.send("C-n")
    time.sleep(0.5)
    typing = []
    text = ""
    cpu0 = app_cpu_s(pid)
    with part("typing"):
        for n in range(typed):
            ch = "abcdefghij"[n % 10]
            text += ch
            want = f"▊  {text}"  # in the field: a lone "a" is on screen before it is typed
            typing.append(key_latency(client, ch, lambda s, w=want: w in s))
    typing_cpu = app_cpu_s(pid) - cpu0
    client.send("C-u")  # clear the field
    time.sleep(0.3)
    burst = []  # ten characters in one go, as fast typing (or keys queued meanwhile) come
    text = ""
    cpu0 = app_cpu_s(pid)
    with part("burst"):
        for n in range(bursts):
            chunk = "klmnopqrst"[n % 10:] + "klmnopqrst"[:n % 10]
            text += chunk
            want = text[-15:]
            burst.append(key_latency(client, f"-l {chunk}", lambda s, w=want: w in s))
    burst_cpu = app_cpu_s(pid) - cpu0
    client.send("C-u")
    time.sleep(0.3)
    flush_probe(pid, log)
    names = [MODES[i % len(MODES)][1] for i in range(len(switch))]
    return {"slow_switches": slow_keys(switch, names, log), "switch_keys": switch,
            "switch": [b - a for a, b in switch], "typing": [b - a for a, b in typing],
            "burst": [b - a for a, b in burst],
            "switch_split": split(switch, log), "typing_split": split(typing, log),
            "burst_split": split(burst, log),
            "switch_app_cpu_s": switch_cpu / max(1, len(switch)),
            "typing_app_cpu_s": typing_cpu / max(1, len(typing)),
            "burst_app_cpu_s": burst_cpu / max(1, len(burst))}


def stats(values: list[float], scale: float = 1000) -> dict:
    """The median, the 90th and 99th percentiles and the largest, times `scale` (seconds ->
    milliseconds)."""
    values = [v for v in values if v is not None]
    vals = sorted(values) or [float("nan")]
    p = lambda q: vals[min(len(vals) - 1, int(round(q * (len(vals) - 1))))]  # noqa: E731
    return {"n": len(values), "median": scale * statistics.median(vals), "p90": scale * p(0.9),
            "p99": scale * p(0.99), "max": scale * vals[-1]}


def quit_time(client: Tmux, marker: Path) -> float:
    """Seconds from ctrl+q to the process's end, right after a Chat reply was started."""
    key_latency(client, "F7", header_says("Chat"))
    time.sleep(1.0)
    client.send("-l", "'hello there'")
    client.send("Enter")
    time.sleep(0.3)  # the model is loading or generating in its thread worker now
    t0 = time.time()
    client.send("C-q")
    deadline = time.monotonic() + 60
    while not marker.is_file() or not marker.read_text().strip():
        if time.monotonic() > deadline:
            return float("inf")
        time.sleep(0.01)
    return float(marker.read_text()) - t0


WHAT = ("switch", "typing", "burst")  # a mode key; a character; ten characters in one go
COLUMNS = (("seen", "median", "median"), ("seen", "p90", "p90"), ("seen", "p99", "p99"),
           ("seen", "max", "max"), ("app", "app", "median"), ("app", "app p99", "p99"),
           ("delivered", "tmux", "median"), ("cpu", "cpu", "median"),
           ("runq", "runq", "median"), ("runq", "runq p99", "p99"),
           ("chars", "kchars", "median"))


def table(result: dict) -> str:
    """The figures as printed, in milliseconds: median..max are key sent -> effect seen on
    screen (what a user waits); `app` is the event loop taking the key -> the frame written;
    `tmux` is sending -> the event loop taking it; `cpu` the event loop's CPU time per key;
    `kchars` the thousands of characters written to the terminal meanwhile (medians unless
    named)."""
    lines = [f"{'phase (ms)':<18} {'what':<6} {'n':>3} "
             + " ".join(f"{h:>7}" for _, h, _ in COLUMNS)]
    for name, ph in result["phases"].items():
        for what in WHAT:
            s = ph[what]
            cells = [s[src][q] for src, _, q in COLUMNS]
            lines.append(f"{name:<18} {what:<6} {s['seen']['n']:>3} "
                         + " ".join(f"{c:>7.1f}" for c in cells))
    lines.append(f"quit during a chat reply, with a training running: "
                 f"{result.get('quit_s', float('nan')):.2f} s"
                 + (f" (the whole benchmark: {result['wall_s']:.0f} s)" if "wall_s" in result
                    else ""))
    for name, ph in result["phases"].items():
        sp = ph.get("training_tokens_per_s")
        if sp:  # what the priority costs the training, with the app idle and with keys coming
            lines.append(f"the training, {name}: {sp['idle']:,.0f} tokens/s with the app idle, "
                         f"{sp['busy']:,.0f} while keys came ({sp['threads']} threads)")
    first = result.get("first_visits_ms")
    if first:  # each mode's first visit, the keys sent from 2 s after the app's first frame
        lines.append("first visits after the start (ms): "
                     + " ".join(f"{name} {ms:.0f}" for name, ms in first.items()))
    for name, ph in result["phases"].items():  # which switches were slow, and what ran then
        slows = sorted(ph["raw"].get("slow_switches", []), key=lambda s: -s["ms"])
        if len(slows) > 6:
            lines.append(f"  {len(slows)} switches over 100 ms, {name}; the 6 slowest:")
        for slow in slows[:6]:
            split_ = " ".join(f"{k} {slow.get(k)}" for k in ("app", "cpu", "runq", "write",
                                                              "chars"))
            lines.append(f"  slow switch, {name}: {slow['key']} {slow['ms']:.0f} ms ({split_}); "
                         f"workers (CPU ms): {' '.join(slow['workers']) or '-'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--switches", type=int, default=140,
                   help="mode switches per phase (140: p99 is the second slowest, not the max)")
    p.add_argument("--typed", type=int, default=20, help="characters typed per phase")
    p.add_argument("--bursts", type=int, default=8, help="bursts of ten characters per phase")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--phases", default="idle,sched-idle,10,0",
                   help="comma-separated: idle (no training), or a background training at "
                   "sched-idle (SCHED_IDLE: as the app starts one) or at a nice level")
    p.add_argument("--quiet-s", type=float, default=8.0,
                   help="seconds the training's speed is measured with the app idle, per phase")
    p.add_argument("--profile", help="cProfile the app's process over each part of each phase: "
                   "PROFILE.PHASE.switch and PROFILE.PHASE.typing (pstats files)")
    p.add_argument("--trace", action="store_true",
                   help="log every pty write of the app, every read of this bench's tmux "
                   "client and, every 5 ms, the state of each process on the way (see Trace): "
                   "the timeline of each switch over 1 s and of each phase's slowest is "
                   "written beside the results (.trace.txt)")
    p.add_argument("--no-quit", action="store_true", help="leave out the quit measurement")
    p.add_argument("--serve", help=argparse.SUPPRESS)  # the app under test (run in tmux)
    p.add_argument("--sample", help=argparse.SUPPRESS)  # --trace's sampler
    p.add_argument("--log", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(Path(args.serve), Path(args.log), Path(args.profile) if args.profile else None,
              args.trace)
        return 0
    if args.sample:
        sample(Path(args.sample), Path(args.log))
        return 0
    if not shutil.which("tmux"):
        raise SystemExit("tmux is needed (apt-get install tmux)")

    from clara import io
    from clara.platform import describe

    started = time.monotonic()
    result = {"platform": describe(), "settings": vars(args), "phases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "workspaces"
        ws = build_workspace(root)
        profile = Path(args.profile).resolve() if args.profile else None
        client, log = start_app(root, tmp, profile, args.trace)
        pid = int((tmp / "app.pid").read_text())
        trace = Trace(tmp, client, pid, log) if args.trace else None
        traced = []
        try:
            for spec in args.phases.split(","):
                priority = None if spec == "idle" else "idle" if spec == "sched-idle" else spec
                name = ("idle" if priority is None else "training, SCHED_IDLE"
                        if priority == "idle" else f"training, nice {int(priority)}")
                name += " (again)" * sum(n.startswith(name) for n in result["phases"])
                training = start_training(ws, priority, trace and trace.events) \
                    if priority is not None else None
                if trace and training:
                    trace.training(training[1])
                speeds = {}
                try:
                    print(f"  phase {name} …", file=sys.stderr)
                    if training:  # the training's speed with the app idle, then busy
                        time.sleep(1.0)
                        a = progress(training[0])
                        time.sleep(args.quiet_s)
                        b = progress(training[0])
                        speeds = {"idle": speed(a, b), "threads": threads(training[1].pid)}
                    raw = phase(client, log, pid, args.switches, args.typed, args.bursts,
                                profile,
                                "".join(c for c in name if c.isalnum()))
                    if training:
                        speeds["busy"] = speed(b, progress(training[0]))
                finally:
                    if training:
                        stop_training(*training)
                if not result["phases"]:  # the app's first phase: each mode's first visit
                    result["first_visits_ms"] = {
                        MODES[i % len(MODES)][1]: 1000 * ms
                        for i, ms in enumerate(raw["switch"][:len(MODES)])}
                result["phases"][name] = {
                    what: {"seen": stats(raw[what]),
                           **{k.removesuffix("_s"): stats(v, 1000 if k.endswith("_s")
                                                           else 0.001)  # chars -> thousands
                              for k, v in raw[f"{what}_split"].items()},
                           "app_cpu_per_key_ms": 1000 * raw[f"{what}_app_cpu_s"]}
                    for what in WHAT} | {"raw": raw, "training_tokens_per_s": speeds or None}
                if trace:
                    traced.append((name, raw["switch_keys"]))
            if not args.no_quit:
                training = start_training(ws, "idle")  # as the app starts one
                try:
                    result["quit_s"] = quit_time(client, tmp / "quit-marker")
                finally:
                    stop_training(*training)
        finally:
            if trace:
                trace.close()
                traced = [f"== {name}\n" + trace.report(
                    keys, [MODES[i % len(MODES)][1] for i in range(len(keys))], log)
                    for name, keys in traced]
            client.close()
            tmux("kill-session", "-t", SESSION)
    result["wall_s"] = time.monotonic() - started
    stamp = time.strftime("%Y%m%d-%H%M%S")
    io.write_json(Path(args.out) / f"tui_latency-{stamp}.json", result)
    io.write_text(Path(args.out) / f"tui_latency-{stamp}.txt", table(result) + "\n")
    if traced:
        io.write_text(Path(args.out) / f"tui_latency-{stamp}.trace.txt", "\n\n".join(traced))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
