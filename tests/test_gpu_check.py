"""perf/gpu_check.sh, the prepared device call of issue 20 item 5: its steps, in order, with arguments that the
perf scripts accept (python3 replaced by a recorder: the steps' real work needs a GPU and minutes)."""
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from perf import harness, projection

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def recorded(tmp_path):
    bin_dir, record = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    shim = bin_dir / "python3"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(record))}\nexit 0\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    result = subprocess.run(["bash", str(ROOT / "perf" / "gpu_check.sh"), "run"], env=env, capture_output=True,
                            text=True, timeout=60)
    return result, record.read_text().splitlines(), tmp_path / "out"


def test_the_steps_run_in_order_with_arguments_the_scripts_accept(recorded):
    result, calls, out = recorded
    assert result.returncode == 0, result.stderr
    steps = [c for c in calls if c.startswith("-m perf.")]
    assert [s.split()[1] for s in steps] == ["perf.projection", "perf.projection", "perf.harness", "perf.harness"]
    for step in steps:
        argv = step.split()[2:]
        module = projection if step.split()[1] == "perf.projection" else harness
        args = module.parse_args(argv)  # exits on an argument the script does not take
        assert args.device == "cuda" and args.out.startswith(str(out))
    assert "--compile" in steps[1] and "--compile" not in steps[0]
    assert "--options-backbones resnet50" in steps[2] and "--no-peers" not in steps[2]  # the peers import here
    log = (out / "gpu_check.log").read_text()
    assert log.count(": exit 0") == 4 and "== harness_vit_base (limit 90 s)" in log
    assert result.stdout.count("exit 0") == 4


def test_usage_without_a_verb():
    result = subprocess.run(["bash", str(ROOT / "perf" / "gpu_check.sh")], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: perf/gpu_check.sh wheels|run" in result.stderr
