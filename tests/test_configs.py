"""The paper configs in ``configs/``: each parses and validates as shipped, and each runs end to end.

* ``test_config_parses_and_validates`` -- every ``configs/*.yaml`` (a new file is picked up at once):
  the ``cam-bench run`` parser reads it with no override, its header documents the command, README
  lists it, ``metric_args`` names only the config's metrics (RunConfig's offline defaults do not
  leak in), and :func:`benchmark.runner.config.validate` accepts it *unmodified*: the test runs from a
  folder holding mini fixtures (``tests/fixtures_data.py``, official file formats) at the config's
  relative data paths, and an empty file at its checkpoint path (validation only checks that it
  exists; no model is built).
* ``test_config_runs_end_to_end`` -- each config through ``benchmark.cli.main(["run", ...])`` in
  process on the mini data, with the overrides below (random-init weights, 2 images, 20 bootstrap
  resamples, CPU, output in tmp_path, data paths -> the fixtures, plus the cost cuts listed per
  config in ``RUNS``); checks ``results.csv`` and ``leaderboard.md`` hold every run method and every
  config metric. Every config must have an entry in ``RUNS``.
"""
import json
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest
from fixtures_chestxray import make_chestxray14
from fixtures_data import make_imagenet, make_voc2007, write_difficult_subset
from fixtures_digits import make_cifar10, make_mnist

from benchmark.cli import _run_parser, main
from benchmark.metrics import list_metrics
from benchmark.report.leaderboard import COLUMNS
from benchmark.runner.config import RunConfig, validate
from datamodules.registry import DATAMODULES

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
TITLES = {metric: title for metric, title, _, _ in COLUMNS}

#: every test run: random init (the configs name hub weights or VOC checkpoints), the first 2 items,
#: 20 bootstrap resamples, no DataLoader workers (2-core machine; the configs ask for 4), CPU, no progress bar
COMMON = ["--weights", "null", "--limit", "2", "--bootstrap", "20", "--num_workers", "0", "--trainer.accelerator",
          "cpu", "--trainer.enable_progress_bar", "false"]

#: config -> extra overrides that only cut the cost (the data paths are added by the test)
RUNS = {
    # the lightest of vgg16 / resnet18 / resnet50; one CAM method and the Fake-CAM baseline (Score-CAM: 512
    # masked forwards per image; Smooth Grad-CAM++: 4 noisy backward passes per map; Grad-CAM++ runs in the
    # gradcampp_* configs); Deletion/Insertion in 4 steps instead of RISE's 224 -- all seven metrics kept
    "poppi_table2": ["--backbones", "[resnet18]", "--explainers", "[gradcam, fakecam]",
                     "--metric_args", "{deletion: {steps: 4}, insertion: {steps: 4}}"],
    "gradcampp_table1_voc": [],
    # 2,510 images do not exist in the mini set (the datamodule refuses a subset larger than the set)
    "gradcampp_table2_imagenet": ["--data_args.subset_size", "3"],
    "gradcampp_table3_multi_instance": [],
    # the lightest of vgg16 / alexnet / googlenet (random-init GoogLeNet also warns about its init)
    "gradcam_localization": ["--backbones", "[alexnet]"],
    "voc_pointing_game": [],
    # the study: occlusion every 45 px instead of every pixel (25 forwards instead of 50,176 per image)
    "study_table1_localization": [],
    "study_table2_pointing": [],
    "study_table3_occlusion": ["--data_args.subset_size", "2", "--metric_args",
                               "{occlusion_correlation: {patch_size: 45, stride: 45}}"],
    # Integrated Gradients in 4 steps and Gradient SHAP with 2 samples instead of 50 and 20
    "study_table4_chestxray_localization": ["--explainer_args",
                                            "{integratedgradients: {steps: 4}, gradientshap: {n_samples: 2}}"],
    "study_table5_box_ratio": ["--explainer_args", "{integratedgradients: {steps: 4}, gradientshap: {n_samples: 2}}"],
    # a 20 x 5 attack budget instead of 400 x 100
    "study_table6_sensitivity": ["--explainer_args", "{integratedgradients: {steps: 4}}", "--metric_args",
                                 "{one_pixel_sensitivity: {n_images: 2, popsize: 20, maxiter: 5}, "
                                 "fgsm_robustness: {}}"],
    "study_table7_fidelity": ["--explainer_args", "{integratedgradients: {steps: 4}, gradientshap: {n_samples: 2}}"],
}


@lru_cache(maxsize=1)
def run_parser():
    return _run_parser()


def parse(path, *overrides):
    """The RunConfig that ``cam-bench run --config path *overrides`` would run."""
    options = run_parser().parse_args(["--config", str(path), *overrides]).as_dict()
    for key in ("config", "__path__", "trainer"):
        options.pop(key, None)
    return RunConfig(**options)


def make_fixtures(config: RunConfig) -> RunConfig:
    """Write mini data (and an empty checkpoint) at the config's paths, relative to the working directory."""
    args = config.data_args
    if config.data == "imagenet":
        make_imagenet(args["root"])
    elif config.data == "voc2007":
        make_voc2007(args["root"])
        if args.get("difficult_subset"):
            write_difficult_subset(args["difficult_subset"])
    elif config.data == "chestxray14":
        make_chestxray14(args["root"])
    elif config.data == "mnist":
        make_mnist(args["root"])
    elif config.data == "cifar10":
        make_cifar10(args["root"])
    elif config.data not in ("synthetic", "random"):
        pytest.fail(f"no mini fixture for data {config.data!r}: add one to tests/fixtures_data.py")
    if config.weights not in (None, "default", "random") and ("/" in config.weights or "." in config.weights):
        Path(config.weights).parent.mkdir(parents=True, exist_ok=True)
        Path(config.weights).touch()
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses_and_validates(path, tmp_path, monkeypatch):
    text = path.read_text()
    assert text.startswith("# "), "a config starts with its header comment (paper, table, data, weights, command)"
    assert f"cam-bench run --config configs/{path.name}" in text, "the header gives the exact command"
    assert f"configs/{path.name}" in (CONFIG_DIR / "README.md").read_text(), "configs/README.md lists it"
    config = parse(path)
    assert set(config.metric_args) <= set(config.metrics), "metric_args of metrics the config does not run"
    assert set(config.metrics) <= set(list_metrics())
    for key in ("root", "difficult_subset", "annotations", "synset_mapping"):
        assert not Path(str(config.data_args.get(key, ""))).is_absolute(), f"{key}: a relative placeholder path"
    monkeypatch.chdir(tmp_path)
    datamodule = validate(make_fixtures(config))  # the config exactly as shipped
    assert isinstance(datamodule, DATAMODULES[config.data])


def test_every_config_has_an_end_to_end_run():
    assert sorted(RUNS) == [p.stem for p in CONFIGS], "add the new config to RUNS with its test overrides"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_config_runs_end_to_end(name, tmp_path, capsys):
    path = CONFIG_DIR / f"{name}.yaml"
    shipped = parse(path)
    data = []
    if shipped.data == "imagenet":
        data = ["--data_args.root", str(make_imagenet(tmp_path / "imagenet" / "val"))]
    elif shipped.data == "voc2007":
        data = ["--data_args.root", str(make_voc2007(tmp_path / "VOCdevkit"))]
        if shipped.data_args.get("difficult_subset"):
            subset = write_difficult_subset(tmp_path / "difficult.txt")
            data += ["--data_args.difficult_subset", str(subset)]
    elif shipped.data in ("chestxray14", "mnist", "cifar10"):
        root = tmp_path / shipped.data
        {"chestxray14": make_chestxray14, "mnist": make_mnist, "cifar10": make_cifar10}[shipped.data](root)
        data = ["--data_args.root", str(root)]
    out = tmp_path / "out"
    argv = ["--config", str(path), *data, *COMMON, *RUNS[name], "--out", str(out)]
    config = parse(path, *argv[2:])
    assert config.metrics == shipped.metrics and set(config.explainers) <= set(shipped.explainers)
    assert config.target == shipped.target and config.top_k == shipped.top_k

    assert main(["run", *argv]) == 0

    results = pd.read_csv(out / "results.csv")
    assert set(results["method"]) == set(config.explainers)
    assert set(results["backbone"]) == set(config.backbones)
    for metric in config.metrics:
        rows = results[(results["metric"] == metric) | results["metric"].str.startswith(metric + "_")]
        assert set(rows["method"]) == set(config.explainers), metric
        assert rows["n"].between(1, 2).all() and (rows["n_invalid"] <= rows["n"]).all(), metric  # n: all samples
    board = (out / "leaderboard.md").read_text()
    for method in config.explainers:
        assert f"| {method} |" in board
    defined = set(results.loc[results["value"].notna(), "metric"])  # a result undefined on these data has no column
    titles = [title for metric, title in TITLES.items()  # the leaderboard columns of the config's metrics
              if metric in defined and any(metric == m or metric.startswith(m + "_") for m in config.metrics)]
    assert titles and all(title in board for title in titles)
    if "average_drop" in config.metrics and len(config.explainers) > 1:
        assert "Win % (Average Drop)" in board
    run = json.loads((out / "run.json").read_text())
    assert run["fingerprint"]["data"] == shipped.data and run["fingerprint"]["target"] == shipped.target
    assert run["fingerprint"]["metric_args"] == {m: config.metric_args.get(m, {}) for m in sorted(config.metrics)}
    assert "Results in" in capsys.readouterr().out
