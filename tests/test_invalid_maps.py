"""Degenerate maps are counted and never ranked: a NaN map makes every metric of its sample undefined, a
metric undefined on most images shows "–" with the count, constant maps are reported and not ranked,
and a map of the wrong shape names its method."""
import textwrap

import pandas as pd
import pytest

from benchmark.cli import main

CAMS = textwrap.dedent('''
    import torch
    from benchmark.explainers import BaseExplainer


    class NanCAM(BaseExplainer):
        """Every map NaN (a method that divides by zero)."""

        uses_gradients = False

        def raw_maps(self, images, targets, indices):
            acts = self.forward_layer(images, targets, indices, False).activations
            return torch.full_like(acts[:, 0], float("nan"))


    class ConstCAM(BaseExplainer):
        """Every map constant (all zero after normalisation)."""

        uses_gradients = False

        def raw_maps(self, images, targets, indices):
            return torch.ones_like(self.forward_layer(images, targets, indices, False).activations[:, 0])


    class HalfCAM(BaseExplainer):
        """NaN on odd dataset indices only (a method undefined on some images)."""

        uses_gradients = False

        def raw_maps(self, images, targets, indices):
            acts = self.forward_layer(images, targets, indices, False).activations
            maps = acts.sum(dim=1)
            return torch.where((indices % 2 == 1).view(-1, 1, 1), float("nan"), maps)


    class SumCAM(BaseExplainer):
        """The channel sum."""

        uses_gradients = False

        def raw_maps(self, images, targets, indices):
            return self.forward_layer(images, targets, indices, False).activations.sum(dim=1)


    class SumCAMCopy(SumCAM):
        """The same maps under another name: every metric ties."""


    class SmallCAM(BaseExplainer):
        """A user's __call__ that forgets to upsample."""

        def __call__(self, images, targets=None, indices=None):
            return torch.zeros(len(images), 7, 7)
''')
RUN = ["run", "--data_args.size", "6", "--batch_size", "3", "--backbones", "[synthetic/res_cnn]", "--bootstrap", "20",
       "--metrics", "[average_drop, complexity, localization_error, pointing_game, coherency]",
       "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]


@pytest.fixture
def cams(tmp_path, clean_registry):
    path = tmp_path / "cams.py"
    path.write_text(CAMS)
    return path


def test_degenerate_maps_are_counted_and_not_ranked(tmp_path, cams):
    out = tmp_path / "run"
    methods = f"[gradcam, center, {cams}:NanCAM, {cams}:ConstCAM, {cams}:HalfCAM]"
    assert main([*RUN, "--explainers", methods, "--out", str(out)]) == 0
    frame = pd.concat(pd.read_parquet(p) for p in (out / "per_sample").rglob("shard_*.parquet"))
    status = frame.groupby("method")["map_status"].agg(lambda s: sorted(set(s))).to_dict()
    assert status == {"gradcam": ["ok"], "center": ["ok"], "nancam": ["not_finite"], "constcam": ["constant"],
                      "halfcam": ["not_finite", "ok"]}
    # a NaN map is undefined for every metric, including those whose formula would give a number
    # (a NaN map thresholds to no box: localization error 100 %, pointing at pixel (0, 0))
    nan_rows = frame[frame["method"] == "nancam"]
    for column in ("average_drop", "complexity", "localization_error", "pointing_game"):
        assert nan_rows[column].map(lambda v: pd.isna(v).all() if hasattr(v, "__len__") else pd.isna(v)).all()
    results = pd.read_csv(out / "results.csv").set_index(["method", "metric"])
    assert (results.loc["nancam", "n_invalid"] == 6).all()
    assert results.loc[("halfcam", "complexity"), "n_invalid"] == 3  # odd indices 1, 3, 5
    assert results.loc[("constcam", "complexity"), ["value", "n_invalid"]].tolist() == [0.0, 0]
    board = (out / "leaderboard.md").read_text()
    table = board[board.index("| Method |"):].split("\n\n")[0]
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    assert rows["nancam"].count("– (6 of 6 undefined)") == 5  # every column shown for this data
    assert "– (" not in rows["halfcam"] and "± 0.00 (3 undefined) |" in rows["halfcam"]  # half, not most: marked
    assert "**" not in rows["constcam"] and "**" not in rows["nancam"]  # constant Complexity 0 does not win
    assert "Maps: constant (all zero after normalisation): constcam 6 of 6; not finite (every metric undefined): " \
           "halfcam 3 of 6, nancam 6 of 6. **Not ranked** (constant or not finite on most images): constcam, " \
           "nancam" in board
    ranks = board[board.index("## Mean rank"):]
    assert "| constcam | – | – |" in ranks and "| nancam | – | – |" in ranks


def test_a_tie_over_every_ranked_method_is_not_bold(tmp_path, cams):
    out = tmp_path / "run"
    assert main([*RUN, "--explainers", f"[{cams}:SumCAM, {cams}:SumCAMCopy]", "--metrics", "[average_drop, complexity]",
                 "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    assert results.groupby("metric")["value"].nunique().tolist() == [1, 1]
    table = (out / "leaderboard.md").read_text().split("| Method |")[1].split("\n\n")[0]
    assert "| sumcam | " in table and "**" not in table


def test_a_map_of_the_wrong_shape_names_the_method(tmp_path, cams):
    with pytest.raises(ValueError, match=r"Explainer 'smallcam' returned maps of shape \(3, 7, 7\); expected "
                                         r"\(B, H, W\) = \(3, 128, 128\)"):
        main([*RUN, "--explainers", f"[{cams}:SmallCAM]", "--out", str(tmp_path / "run")])


OPT_IN = ["max_box_acc_v2", "pxap", "road_morf", "road_lerf", "infidelity_square", "infidelity_gaussian",
          "max_sensitivity", "mprt"]


def test_the_opt_in_metrics_count_nan_maps_invalid_and_never_rank_constant_ones(tmp_path, cams):
    """The faithfulness and sanity metrics follow the same policy: a NaN map is undefined for each of them (never
    an imputed, perturbed or randomized score), a method with constant maps is listed and not ranked."""
    out = tmp_path / "run"
    run = [a if a != "[average_drop, complexity, localization_error, pointing_game, coherency]" else
           f"[{', '.join(OPT_IN)}]" for a in RUN]
    assert main([*run, "--explainers", f"[gradcam, {cams}:NanCAM, {cams}:ConstCAM]", "--out", str(out)]) == 0
    results = pd.read_csv(out / "results.csv").set_index(["method", "metric"])
    for metric in OPT_IN:
        assert results.loc[("nancam", metric), "n_invalid"] == 6, metric
        assert results.loc[("gradcam", metric), "n_invalid"] == 0, metric
        assert pd.isna(results.loc[("nancam", metric), "value"]), metric
        assert pd.notna(results.loc[("constcam", metric), "value"]), metric  # computed and counted ...
    board = (out / "leaderboard.md").read_text()
    table = board[board.index("| Method |"):].split("\n\n")[0]
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    assert "**" not in rows["constcam"] and "**" not in rows["nancam"]  # ... never ranked nor bold
    assert "**Not ranked** (constant or not finite on most images): constcam, nancam" in board
