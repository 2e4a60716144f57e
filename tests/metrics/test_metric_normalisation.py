"""The metrics whose perturbations are in pixel units (ROAD's noise, FGSM's step, infidelity's and
max-sensitivity's noise, the one-pixel attack's colours) get the normalisation the images were made with in a run,
not their ImageNet default: the shipped synthetic backbones normalise with 0.5 / 0.5, where the default made FGSM's
8/255 step 2.2x too large in pixel units."""
import inspect

import numpy as np
import pytest
import torch

from benchmark.cli import console, main
from benchmark.metrics.functional.fgsm import fgsm_attack
from benchmark.metrics.registry import METRICS, NORMALISATION, with_normalisation
from benchmark.report.results import read_per_sample

TAKERS = [name for name, cls in METRICS.items() if set(NORMALISATION) & set(inspect.signature(cls.__init__).parameters)]
RUN = ["--backbones", "[synthetic/res_cnn]", "--data_args", "{size: 4}", "--batch_size", "4", "--explainers",
       "[center]", "--metrics", "[fgsm_robustness]", "--bootstrap", "10", "--trainer.accelerator", "cpu",
       "--trainer.enable_progress_bar", "false"]


def test_the_metrics_that_take_a_normalisation():
    assert set(TAKERS) == {"fgsm_robustness", "one_pixel_sensitivity", "road_morf", "road_lerf",
                           "infidelity_gaussian", "max_sensitivity"}


@pytest.mark.parametrize("name", TAKERS)
def test_the_images_normalisation_is_filled_in_and_a_different_one_refused(name):
    args = with_normalisation(name, {}, (0.5,) * 3, (0.25,) * 3)
    metric = METRICS[name](**args)
    for key, value in (("mean", (0.5,) * 3), ("std", (0.25,) * 3)):
        if key in args:
            assert tuple(getattr(metric, key)) == value
    assert with_normalisation(name, {"std": 0.25}, (0.5,) * 3, (0.25,) * 3)["std"] == (0.25,) * 3
    with pytest.raises(ValueError, match=rf"metric_args\.{name}\.std is 0\.229.*drop the argument"):
        with_normalisation(name, {"std": 0.229}, (0.5,) * 3, (0.25,) * 3)


def test_fgsm_step_is_8_over_255_in_pixel_units_on_a_model_normalised_with_half():
    """Hand check of the convention: with std 0.5 the normalised step is (8/255) / 0.5."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    images = torch.randn(2, 3, 2, 2)
    args = with_normalisation("fgsm_robustness", {}, (0.5,) * 3, (0.5,) * 3)
    adversarial, _ = fgsm_attack(model, images, torch.tensor([0, 1]), 8 / 255, args["std"])
    assert torch.allclose((adversarial - images).abs() * 0.5, torch.full_like(images, 8 / 255))


def test_a_run_perturbs_in_the_images_units(tmp_path, capsys):
    """The run's default equals naming the synthetic backbones' normalisation (0.5 / 0.5); naming ImageNet's is
    refused before anything is computed."""
    values = {}
    for name, extra in (("default", []), ("named", ["--metric_args", "{fgsm_robustness: {std: 0.5, mean: 0.5}}"])):
        assert main(["run", *RUN, *extra, "--out", str(tmp_path / name)]) == 0
        values[name] = np.stack(read_per_sample(tmp_path / name)["fgsm_robustness"].to_list()).astype(float)
    np.testing.assert_array_equal(values["default"], values["named"])
    capsys.readouterr()
    assert console(["run", *RUN, "--metric_args", "{fgsm_robustness: {std: [0.229, 0.224, 0.225]}}",
                    "--out", str(tmp_path / "imagenet")]) == 2
    assert "metric_args.fgsm_robustness.std is [0.229, 0.224, 0.225], but the images are normalised with std " \
           "(0.5, 0.5, 0.5)" in capsys.readouterr().err
    assert not (tmp_path / "imagenet" / "per_sample").exists()
