"""gunicorn.conf.py holds settings; every server hook it gives gunicorn is
liroo/gunicorn_hooks.py's, documented there."""

import json
import subprocess
import sys

import pytest

from liroo import gunicorn_hooks
from liroo.governor.workers import RetiringWorkers
from tests.servers import ROOT

HOOKS = (
    "on_starting",
    "when_ready",
    "post_worker_init",
    "worker_exit",
    "child_exit",
    "nworkers_changed",
    "on_exit",
)


def configured_hooks() -> dict:
    """gunicorn's own reading of gunicorn.conf.py (in a fresh interpreter: the file sets
    process-wide state)."""
    script = (
        "import json, sys\n"
        "from gunicorn.app.base import Application\n"
        "class App(Application):\n"
        "    def init(self, *a): return None\n"
        "    def load(self): return None\n"
        "sys.argv = ['gunicorn', '-c', 'gunicorn.conf.py']\n"
        "cfg = App().cfg\n"
        f"print(json.dumps({{name: getattr(cfg, name).__module__ for name in {HOOKS!r}}}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_every_hook_comes_from_the_hooks_module():
    assert configured_hooks() == {name: "liroo.gunicorn_hooks" for name in HOOKS}


@pytest.mark.parametrize("hook", HOOKS)
def test_each_hook_says_when_and_where_it_runs(hook):
    doc = gunicorn_hooks.__doc__
    start = doc.index(f"\n{hook}(")
    section = doc[start:].split("\n\n", 1)[0]
    assert "Master" in section or "Worker" in section, section


def test_a_worker_retiring_as_the_previous_one_exits_is_counted_once_each():
    """The race of back-to-back recycles: worker 11 retires and exits, and worker 12 announces
    itself before the master has reaped 11. Each is counted while alive, and only then."""
    retiring = RetiringWorkers()
    retiring.announce(11)
    assert retiring.wanted_workers(2, live_pids=[11, 12, 13]) == 3
    retiring.announce(12)
    assert retiring.wanted_workers(2, live_pids=[11, 12, 13, 14]) == 4  # 11 not yet reaped
    assert retiring.wanted_workers(2, live_pids=[12, 13, 14]) == 3  # 11 reaped
    assert retiring.wanted_workers(2, live_pids=[13, 14, 15]) == 2  # 12 reaped
    assert retiring.wanted_workers(2, live_pids=[13, 14, 15]) == 2  # asked again: no drift


def test_an_announcement_read_after_its_worker_exited_counts_nothing():
    retiring = RetiringWorkers()
    retiring.announce(21)
    assert retiring.wanted_workers(2, live_pids=[22, 23]) == 2
