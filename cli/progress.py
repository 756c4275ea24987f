"""Progress on stderr for long work, with tqdm: quiet when stderr is not a terminal or --json/--quiet is given."""
from __future__ import annotations

import sys
import threading
import time


def wanted(args) -> bool:
    return not (getattr(args, "quiet", False) or getattr(args, "json", False)) and sys.stderr.isatty()


def counter(args, desc: str):
    """A ``callback(done, total)`` drawing a bar on stderr (or None when not wanted); call ``.close()`` after."""
    if not wanted(args):
        return None
    from tqdm import tqdm

    bar = {}

    def update(done: int, total: int):
        if "b" not in bar:
            bar["b"] = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        if bar["b"].total != total:  # the work was restarted with another size (the compiler re-partitions)
            bar["b"].reset(total=total)
        bar["b"].n = done
        bar["b"].refresh()

    update.close = lambda: bar["b"].close() if "b" in bar else None
    return update


def close(progress) -> None:
    if progress is not None:
        progress.close()


def stages(args, prefix: str):
    """A ``callback(message)`` that prints each stage of a long job on stderr; while a stage runs on a
    terminal, a ticker shows the seconds it has taken.  Call ``.close()`` after."""
    if getattr(args, "quiet", False) or getattr(args, "json", False):
        say = lambda message: None  # noqa: E731
        say.close = lambda: None
        return say
    tty = sys.stderr.isatty()
    state = {"stage": None, "t0": 0.0, "stop": threading.Event()}

    def tick():
        while not state["stop"].wait(1.0):
            if state["stage"] is not None:
                print(f"\r{prefix}: {state['stage']} ({time.monotonic() - state['t0']:.0f} s)", end="",
                      file=sys.stderr, flush=True)

    def say(message: str):
        if tty and state["stage"] is not None:
            print(file=sys.stderr)
        state["stage"], state["t0"] = message, time.monotonic()
        print(f"\r{prefix}: {message}", end="" if tty else "\n", file=sys.stderr, flush=True)

    def close():
        state["stop"].set()
        if tty and state["stage"] is not None:
            print(file=sys.stderr)

    if tty:
        threading.Thread(target=tick, daemon=True).start()
    say.close = close
    return say
