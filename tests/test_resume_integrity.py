"""Run folder integrity on resume (benchmark/runner/run.py, folder.py, config.py): a SIGKILLed attempt's weights
and shards are on record, a rerun never rewrites config.yaml with settings that did not produce the results,
explainer_args reach a plugin under its registered name, and a configured method without rows is incomplete."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import benchmark.runner.run as run
from benchmark.cli import console, main
from benchmark.runner.folder import weights_hash
from benchmark.runtime.backbones import create_backbone

TINY = ["run", "--data_args", "{size: 4}", "--batch_size", "2", "--backbones", "[synthetic/res_cnn]",
        "--metrics", "[average_drop, complexity]", "--bootstrap", "20", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false"]
RANDOM = [*TINY, "--explainers", "[gradcam]", "--weights", "random"]


def _shards(out, method="gradcam"):
    return {int(p.stem.split("_")[1]) for p in (out / "per_sample" / "synthetic--res_cnn" / method).glob("shard_*")}


@pytest.mark.slow
def test_a_resume_after_sigkill_checks_the_weights_and_keeps_the_killed_attempts_provenance(tmp_path, capsys):
    args = [*RANDOM, "--data_args", "{size: 24}", "--seed", "0"]  # 12 shards
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 300
        while not _shards(out) and time.monotonic() < deadline:
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # no `finally` runs: what is on record was written before predict
    finally:
        proc.wait(timeout=60)
    killed = _shards(out)
    assert proc.returncode == -signal.SIGKILL and 1 <= len(killed) < 12
    seed0, _ = create_backbone("synthetic/res_cnn", weights="random", seed=0)
    seed1, _ = create_backbone("synthetic/res_cnn", weights="random", seed=1)
    recorded = json.loads((out / "run.json").read_text())["backbones"]["synthetic/res_cnn"]
    assert recorded["weights_sha256"] == weights_hash(seed0) and recorded["complete"] is False
    # another --seed builds another model: refused as one line, and nothing on disk changes
    assert console([*args[:-2], "--seed", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "computed with other weights" in err and weights_hash(seed1)[:12] in err and "--seed" in err
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 0 and _shards(out) == killed
    # the same command finishes the run, with the numbers of an uninterrupted one
    assert main([*args, "--out", str(out)]) == 0
    complete = tmp_path / "complete"
    assert main([*args, "--out", str(complete)]) == 0
    assert (out / "results.csv").read_bytes() == (complete / "results.csv").read_bytes()
    # every shard on disk is listed once: the killed attempt's (marked) and the resume's
    provenance = json.loads((out / "run.json").read_text())["provenance"]
    assert [sorted(p["shards"]["gradcam"]) for p in provenance] == [sorted(killed), sorted(set(range(12)) - killed)]
    assert "SIGKILL" in provenance[0]["killed"] and "killed" not in provenance[1]
    assert not any("shards_before" in p for p in provenance)


def test_a_rerun_with_another_seed_is_refused_and_leaves_config_yaml(tmp_path, capsys):
    out = tmp_path / "done"
    assert main([*RANDOM, "--seed", "0", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in (out / "config.yaml", out / "run.json")}
    # nothing is left to compute, but --seed 1 (random init) would have built other weights
    assert console([*RANDOM, "--seed", "1", "--out", str(out)]) == 2
    assert "computed with other weights" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (out / "config.yaml", out / "run.json")} == before
    # the recorded settings reproduce the recorded numbers
    repro = tmp_path / "repro"
    assert main(["run", "--config", str(out / "config.yaml"), "--out", str(repro),
                 "--trainer.enable_progress_bar", "false"]) == 0
    assert (repro / "results.csv").read_bytes() == (out / "results.csv").read_bytes()


def test_a_shipped_checkpoint_does_not_depend_on_the_seed(tmp_path):
    """--seed seeds random init only: with the shipped checkpoint the weights are the same, so a rerun under
    another seed is accepted (its config.yaml, bootstrap seed included, reproduces the re-rendered board)."""
    out = tmp_path / "shipped"
    assert main([*TINY, "--explainers", "[center]", "--out", str(out)]) == 0
    assert main([*TINY, "--explainers", "[center]", "--seed", "1", "--out", str(out)]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 1


ZERO_CAM = textwrap.dedent('''
    from benchmark.explainers import BaseExplainer


    class ZeroableCAM(BaseExplainer):
        """Channels weighted by their mean activation; zero=True: by 0 (an all-zero map)."""

        uses_gradients = False

        def __init__(self, model, target_layer=None, input_size=(3, 224, 224), zero=False, *, layout=None):
            super().__init__(model, target_layer, input_size, layout=layout)
            self.zero = bool(zero)

        def weights(self, inputs):
            w = inputs.activations.mean(dim=(2, 3), keepdim=True)
            return w * 0 if self.zero else w
''')


@pytest.mark.parametrize("key", ["zeroablecam", "spec"])
def test_explainer_args_reach_a_plugin_under_its_registered_name(tmp_path, clean_registry, key):
    source = tmp_path / "zero_cam.py"
    source.write_text(ZERO_CAM)
    spec = f"{source}:ZeroableCAM"
    args = [*TINY, "--explainers", f"[{spec}]", "--metrics", "[complexity]"]
    key = spec if key == "spec" else key
    out = tmp_path / "args"
    assert main([*args, "--explainer_args", json.dumps({key: {"zero": True}}), "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    # an all-zero map has complexity (its mean) exactly 0 on every image; the default map is positive
    assert results.loc[results["metric"] == "complexity", "value"].tolist() == [0.0]
    assert "| Explainer settings | zeroablecam: zero=True |" in (out / "leaderboard.md").read_text()
    fingerprint = json.loads((out / "run.json").read_text())["fingerprint"]
    assert fingerprint["explainer_args"] == {"zeroablecam": {"zero": True}}
    plain = tmp_path / "plain"
    assert main([*args, "--out", str(plain)]) == 0
    assert pd.read_csv(plain / "results.csv").loc[lambda f: f["metric"] == "complexity", "value"].item() > 0


def test_a_spec_and_its_registered_name_both_given_are_refused(tmp_path, clean_registry, capsys):
    source = tmp_path / "zero_cam.py"
    source.write_text(ZERO_CAM)
    spec = f"{source}:ZeroableCAM"
    both = json.dumps({spec: {"zero": True}, "zeroablecam": {"zero": False}})
    assert console([*TINY, "--explainers", f"[{spec}]", "--explainer_args", both, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "both name 'zeroablecam'; pass its arguments under 'zeroablecam' only" in err
    assert not (tmp_path / "x" / "run.json").exists()


def test_a_configured_method_without_rows_is_incomplete(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main([*TINY, "--explainers", "[gradcam]", "--out", str(out)]) == 0

    def killed(*args, **kwargs):  # SIGKILL right after run.json records the new config: no shard of gradcampp
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_run_all", killed)
    with pytest.raises(KeyboardInterrupt):
        main([*TINY, "--explainers", "[gradcam, gradcampp]", "--out", str(out)])
    assert main(["leaderboard", str(out)]) == 3
    assert "--allow_partial" in capsys.readouterr().err
    assert "**incomplete** (a partial run: rerun the same command to finish it): synthetic/res_cnn / gradcampp: " \
           "0 of 4 |" in (out / "leaderboard.md").read_text()
    # a method's folder deleted by hand is missing the same way
    monkeypatch.undo()
    assert main([*TINY, "--explainers", "[gradcam, gradcampp]", "--out", str(out)]) == 0
    assert main(["leaderboard", str(out)]) == 0
    for shard in (out / "per_sample" / "synthetic--res_cnn" / "gradcam").glob("*.parquet"):
        shard.unlink()
    assert main(["leaderboard", str(out)]) == 3
    assert "synthetic/res_cnn / gradcam: 0 of 4" in (out / "leaderboard.md").read_text()
