"""The static catalog behind ``cam-bench list`` and ``run --help`` agrees with the live registries, and those
two commands import no model library (what makes them answer in a fraction of a second)."""
import inspect
import json
import subprocess
import sys

import pytest
import pytorch_lightning as pl

from benchmark import catalog
from benchmark.cli import _run_parser
from benchmark.explainers import PAPER_LAYERS, describe_explainer
from benchmark.explainers.layers import TRANSFORMER_LAYERS
from benchmark.explainers.registry import _REGISTRY
from benchmark.metrics import METRICS, default_metrics, list_metrics
from benchmark.runtime.backbones import list_backbones
from datamodules import describe_datamodule, list_datamodules


def _builtin_explainers():
    """The explainers shipped in the package (tests register plugins in the same process)."""
    return sorted(n for n, cls in _REGISTRY.items() if cls.__module__.startswith("benchmark.explainers."))


LIVE = {
    "EXPLAINERS": lambda: {n: describe_explainer(n) for n in _builtin_explainers()},
    "DEFAULT_EXPLAINERS": lambda: tuple(n for n in _builtin_explainers() if _REGISTRY[n].in_default_run),
    "METRICS": lambda: {n: METRICS[n].__doc__.strip().splitlines()[0] for n in list_metrics()},
    "DEFAULT_METRICS": lambda: tuple(default_metrics()),
    "DATAMODULES": lambda: {n: describe_datamodule(n) for n in list_datamodules()},
    "SYNTHETIC_BACKBONES": lambda: tuple(list_backbones("synthetic")),
    "DIGITS_BACKBONES": lambda: tuple(list_backbones("digits")),
    "TARGET_LAYERS": lambda: {k: v[1] for k, v in {**PAPER_LAYERS, **TRANSFORMER_LAYERS}.items()},
}


@pytest.mark.parametrize("name", sorted(LIVE))
def test_the_catalog_matches_the_registry(name):
    live = LIVE[name]()
    assert getattr(catalog, name) == live, (
        f"benchmark/catalog.py is out of date: set {name} = {json.dumps(live, indent=4, ensure_ascii=False)}")


def test_the_trainer_flags_are_lightnings():
    params = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    assert set(catalog.NOT_FOR_PREDICT) <= params
    assert set(catalog.TRAINER_FLAGS) <= params - set(catalog.NOT_FOR_PREDICT)


def _options(parser):
    return {s for action in parser._actions for s in action.option_strings}


def test_the_help_parser_lists_what_the_run_parser_accepts():
    full, light = _options(_run_parser(full=True)), _options(_run_parser(full=False))
    assert {o for o in light if not o.startswith("--trainer")} == {o for o in full if not o.startswith("--trainer")}
    assert {o for o in light if o.startswith("--trainer")} <= full
    # the flags a run passes through are the Trainer's, less those that never act on predict
    assert {o for o in full if o.startswith("--trainer.") and ".help" not in o and not o.endswith("+")} == {
        f"--trainer.{p}" for p in inspect.signature(pl.Trainer.__init__).parameters
        if p != "self" and p not in catalog.NOT_FOR_PREDICT}


@pytest.mark.parametrize("argv", [["list"], ["run", "--help"], ["--help"], ["leaderboard", "--help"],
                                  ["demo", "--help"]])
def test_listing_and_help_import_no_model_library(argv):
    code = ("import sys\nfrom benchmark.cli import console\ntry:\n    console(%r)\nexcept SystemExit:\n    pass\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'timm', 'torchmetrics',"
            " 'pytorch_lightning', 'lightning', 'transformers', 'datasets', 'captum', 'matplotlib', 'pyarrow'})\n"
            "print('HEAVY', heavy)" % (argv,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out[-500:]
