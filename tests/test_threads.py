"""Torch threads and loader workers sized together; the env override; passive OpenMP."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsgeo.errors import InputError
from rsgeo.train import threads
from rsgeo.train.threads import available_cores, busy_cores, plan_threads, torch_threads


def test_threads_plus_workers_fit_the_cores(monkeypatch):
    monkeypatch.delenv("RSGEO_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0)
    assert available_cores() == 16
    assert plan_threads(0) == 16 and plan_threads(12) == 4 and plan_threads(40) == 1
    monkeypatch.setattr(threads, "busy_cores", lambda: 5)  # other processes' cores stay theirs
    assert plan_threads(0) == 11 and plan_threads(12) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")           # the user's cap
    assert plan_threads(0) == 2
    monkeypatch.setenv("RSGEO_NUM_THREADS", "3")         # the override wins
    assert plan_threads(12) == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("RSGEO_NUM_THREADS", bad)
        with pytest.raises(InputError, match="RSGEO_NUM_THREADS"):
            plan_threads(0)


def test_busy_cores_from_the_runnable_count(tmp_path, monkeypatch):
    loadavg = tmp_path / "loadavg"
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    loadavg.write_text("0.50 0.40 0.30 1/300 4242\n")       # only this process runs
    assert busy_cores(samples=3, interval=0, path=str(loadavg)) == 0
    loadavg.write_text("9.00 6.00 3.00 7/300 4242\n")       # 6 others, not the 1-min 9.0
    assert busy_cores(samples=3, interval=0, path=str(loadavg)) == 6
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    assert busy_cores(samples=3, interval=0, path=str(loadavg)) == 1   # 4 of 16 cores: a quarter
    assert busy_cores(path=str(tmp_path / "absent")) == 0             # unknown: none busy
    loadavg.write_text("garbage\n")
    assert busy_cores(samples=1, path=str(loadavg)) == 0


def test_torch_threads_are_restored():
    import torch

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_import_rsgeo_before_torch_makes_openmp_wait_passively():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    code = "import rsgeo, os; print(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE"
    spin = "import rsgeo, os; print(os.environ.get('GOMP_SPINCOUNT'))"  # a short spin first
    out = subprocess.run([sys.executable, "-c", spin], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "10000"
    env["OMP_WAIT_POLICY"] = "ACTIVE"                     # the user's choice stays
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE"
