"""gunicorn.conf.py holds settings; every server hook it gives gunicorn is
liroo/gunicorn_hooks.py's, documented there."""

import json
import subprocess
import sys
import types

import pytest

from liroo import gunicorn_hooks
from liroo.governor import Governor, GovernorConfig, MemoryProbe
from liroo.governor.workers import RetiringWorkers, WorkerRecycler
from tests.cgroupfake import FakeCgroupV2
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


def test_on_exit_removes_the_metrics_folder_it_was_given(tmp_path):
    metrics_dir = tmp_path / "metrics"
    (metrics_dir / "inner").mkdir(parents=True)
    (metrics_dir / "counter_11.db").write_bytes(b"counts")
    gunicorn_hooks.on_exit_removing(str(metrics_dir))(server=None)
    assert not metrics_dir.exists() and tmp_path.is_dir()
    gunicorn_hooks.on_exit_removing(None)(server=None)  # no folder was made: nothing to do
    assert tmp_path.is_dir()


@pytest.mark.parametrize("recycling, count_after", [(False, 3), (True, 2)])
def test_a_changed_worker_count_goes_back_to_the_setting_only_with_the_recycler(
    tmp_path, monkeypatch, recycling, count_after
):
    """gunicorn raised the count to 3 (a SIGTTIN) with none of its workers retiring: with the
    recycler (governor on) the master puts it back to the setting (2); without, it is left."""
    recycler = None
    if recycling:
        probe = MemoryProbe(FakeCgroupV2(tmp_path, limit_mb=1000, used_mb=100).root)
        recycler = WorkerRecycler(Governor(GovernorConfig(), probe=probe), configured_workers=2)
    monkeypatch.setattr(gunicorn_hooks, "_recycler", recycler)
    master = types.SimpleNamespace(WORKERS={11: None, 12: None, 13: None}, num_workers=3)
    gunicorn_hooks.nworkers_changed(master, 3, 2)
    assert master.num_workers == count_after


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
