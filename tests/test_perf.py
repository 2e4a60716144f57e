"""The speed harness: floors (hand-counted), timing and memory helpers, peer adapters, compiled copies, a smoke run."""
import math
import time
from types import SimpleNamespace

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.models import resnet18

from benchmark.explainers import create_explainer, list_explainers
from benchmark.explainers.fastpath import InferenceCopy
from benchmark.explainers.registry import _REGISTRY
from benchmark.metrics import create_metric, list_metrics
from perf import harness, timing
from perf.floors import Cost, explainer_cost, metric_cost
from perf.peers import PEERS, peer_calls, peer_metric, reshape_transform


@pytest.mark.parametrize("name", list_explainers())
def test_every_registered_explainer_has_a_floor(name):
    model = (VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=4)
             if getattr(_REGISTRY[name], "requires_attention", False) else resnet18(num_classes=4))  # ViT-only methods
    explainer = create_explainer(name, model, input_size=(3, 32, 32))
    cost = explainer_cost(name, 4, 512, explainer)
    assert all(count > 0 and batch > 0 for count, _, batch in cost.terms)


@pytest.mark.parametrize("name", list_metrics())
def test_every_registered_metric_has_a_floor(name):
    cost = metric_cost(name, 4, create_metric(name), (224, 224), top_k=5)
    assert all(count > 0 and batch > 0 for count, _, batch in cost.terms)


def test_floors_count_the_protocols_passes_by_hand():
    score = create_explainer("scorecam", resnet18(num_classes=4), chunk_size=16)
    # the clean forward on the model, the masked ones on the folded inference copy they run on
    assert explainer_cost("scorecam", 8, 2048, score).terms == ((1, "forward", 8), (2048, "copy", 16))
    smooth = create_explainer("smoothgradcampp", resnet18(num_classes=4), n_samples=7)
    assert explainer_cost("smoothgradcampp", 2, 512, smooth).terms == ((1, "forward", 2), (7, "grad", 2))
    ablation = create_explainer("ablationcam", resnet18(num_classes=4), chunk_size=64)
    assert explainer_cost("ablationcam", 1, 512, ablation).describe() == "1 F(1) + 512 T(64)"
    # RISE default on 224 x 224: 224 pixels per step -> 224 perturbed forwards per curve
    assert metric_cost("deletion", 4, create_metric("deletion"), (224, 224)).terms == ((224, "copy", 64),)
    assert metric_cost("insertion", 4, create_metric("insertion", steps=16, chunk_size=8), (224, 224)).terms == \
        ((16, "copy", 8),)
    plain = create_metric("deletion", fast=False)
    assert metric_cost("deletion", 4, plain, (224, 224)).terms == ((224, "forward", 64),)
    # forward-free work: one sort of the map for the threshold sweeps, one reduction for the other map-only metrics
    assert metric_cost("max_box_acc", 4, None, (224, 224)).describe() == "1 S(4)"
    assert metric_cost("complexity", 4, None, (224, 224)).describe() == "1 R(4)"
    assert metric_cost("insertion", 4, create_metric("insertion", pixels_per_step=1000), (224, 224)).terms[0][0] == \
        math.ceil(224 * 224 / 1000)
    assert metric_cost("localization_error", 4, None, (224, 224), top_k=5).terms == ((4, "explainer", 4),)
    # 1 forward at 20 ms + 512 forwards at 10 ms per image
    assert Cost(((1, "forward", 1), (512, "forward", 32))).seconds({("forward", 1): 0.02, ("forward", 32): 0.01}) \
        == pytest.approx(5.14)
    with pytest.raises(KeyError, match="No floor"):
        explainer_cost("unknown", 1, 1, None)
    # Shapley-CAM: Grad-CAM's pass, then the Hessian-vector product: the tail forward and back once more
    shapley = create_explainer("shapleycam", resnet18(num_classes=4))
    assert explainer_cost("shapleycam", 8, 512, shapley).describe() == "1 G(8) + 1 H(8)"


def test_tail_gradient_unit_is_the_gradient_through_the_layers_after_the_target(monkeypatch):
    from perf.measure import Bench

    torch.manual_seed(0)
    model = resnet18(num_classes=4).eval()
    bench = Bench("resnet18", model, "layer4", 64, torch.device("cpu"), repeats=1, pause=0)
    seen = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: seen.append(grad(*a, **k)[0]) or (seen[-1],))
    bench.unit("tailgrad", 3)()
    # closed form: the tail is average pooling + fc, so d logit_c / dA = fc.weight[c] / (h w) at every position
    _, targets = bench.inputs(3)
    expected = (model.fc.weight[targets] / 4).detach()[:, :, None, None].expand(3, 512, 2, 2)
    torch.testing.assert_close(seen[0], expected)
    # a model that cannot be split there: the whole gradient pass stands in (an upper bound), for live-ins the tail
    # cannot take per image (run_prefix gives None) as for no split at all
    calls = []
    monkeypatch.setattr(bench, "_grad_pass", lambda images, targets: calls.append(len(images)))
    monkeypatch.setattr(bench._split, "run_prefix", lambda images: None)
    bench.unit("tailgrad", 2)()
    bench._split = None
    bench.unit("tailgrad", 3)()
    assert calls == [2, 3]
    # and the floor column then names what was timed: G for H
    bench.splits = False
    shapley = create_explainer("shapleycam", model, input_size=(3, 64, 64))
    assert bench._splittable(explainer_cost("shapleycam", 2, 512, shapley)).describe() == "1 G(2) + 1 G(2)"


def test_median_time_alternates_warms_up_and_takes_medians(monkeypatch):
    clock = iter([0, 1, 10, 13, 20, 22, 30, 35, 40, 41, 50, 53])  # a: 1, 2, 1 ; b: 3, 5, 3
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls = []
    result = timing.median_time({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3,
                                warmup={"b": lambda: calls.append("warm b")})
    assert calls == ["a", "warm b", "a", "b", "a", "b", "a", "b"]
    assert result == {"a": 1, "b": 3}
    with pytest.raises(ValueError, match="repeats"):
        timing.median_time({"a": lambda: None}, repeats=0)


def test_peak_memory_sees_an_allocation_and_its_absence():
    big = timing.peak_memory_mib(lambda: torch.ones(64, 1024, 1024).sum())  # 256 MiB
    if big is None:
        pytest.skip("no /proc peak-RSS reset on this platform")
    small = timing.peak_memory_mib(lambda: torch.ones(16).sum())
    assert 200 < big < 400 and small < 50


@pytest.mark.parametrize("name", ["gradcam", "scorecam", "smoothgradcampp", "ablationcam"])
def test_peer_adapters_run_and_leave_no_hooks(name):
    torch.manual_seed(0)
    model = resnet18(num_classes=5).eval()
    kwargs = {"chunk_size": 64} if name in ("scorecam", "ablationcam") else {}
    ours = create_explainer(name, model, input_size=(3, 32, 32), **kwargs)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    calls = peer_calls(name, model, ours.target_layer, ours)
    assert set(calls) <= set(PEERS) and calls
    for call in calls.values():
        call(x, t, None)
    for peer in PEERS:
        peer_metric(peer, model, ours.target_layer)(x, t, ours(x, t))
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_compiled_inference_copy_equals_the_eager_copy_and_runs_smaller_batches_uncompiled():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 3)).eval()
    eager, compiled = InferenceCopy(model), InferenceCopy(model, compile=True)
    x = torch.randn(6, 3, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(compiled(x), model(x), atol=1e-5) and torch.allclose(compiled(x), eager(x), atol=1e-6)
        start = time.perf_counter()
        small = compiled(x[:2])  # smaller than the compiled batch: the uncompiled copy, no new compilation
        assert time.perf_counter() - start < 1.0
        assert torch.allclose(small, model(x[:2]), atol=1e-5)
    scores = [create_explainer("scorecam", model, input_size=(3, 16, 16), chunk_size=4, compile=c)
              for c in (False, True)]
    assert torch.allclose(scores[0](x[:3]), scores[1](x[:3]), atol=1e-5)


def test_harness_smoke_run_writes_the_results_file(tmp_path):
    out = tmp_path / "speed.md"
    harness.main(["--backbones", "resnet18", "--size", "32", "--batch-sizes", "2", "--repeats", "1",
                  "--perturb-repeats", "1", "--explainers", "gradcam", "scorecam", "fakecam", "--metrics",
                  "average_drop", "average_increase", "deletion", "complexity", "--options-backbones", "--out",
                  str(out)])
    text = out.read_text()
    for part in ("- command: `python -m perf.harness --backbones resnet18", "- machine: ", "## Targets",
                 "gradient CAMs, worst ours / plain forward", "## resnet18", "### Explainers", "### Metrics",
                 "| scorecam ", "1 F(1) + 512 C(32)", "1 R(2)", "| average_drop+average_increase ", "| deletion ",
                 "ours / grad-cam", "ours / torch-cam", "peak MiB ours"):
        assert part in text, part


def test_harness_without_peers_calls_none_and_says_so(tmp_path, monkeypatch):
    from perf import measure

    def refuse(*args, **kwargs):
        raise AssertionError("a peer was called under --no-peers")

    monkeypatch.setattr(measure, "peer_calls", refuse)
    monkeypatch.setattr(measure, "peer_metric", refuse)
    out = tmp_path / "speed.md"
    harness.main(["--backbones", "resnet18", "--size", "32", "--batch-sizes", "2", "--repeats", "1",
                  "--perturb-repeats", "1", "--explainers", "gradcam", "scorecam", "--metrics", "average_drop",
                  "average_increase", "--options-backbones", "--no-peers", "--out", str(out)])
    text = out.read_text()
    assert "- peers: not run (`--no-peers`)" in text and "| scorecam " in text and "1 F(1) + 512 C(32)" in text
    assert "worst ours / grad-cam ScoreCAM" not in text  # no target stated against a peer that did not run
    rows = [line for line in text.splitlines() if line.startswith("| gradcam ")]
    assert rows and all(line.split("|")[8].strip() == "" for line in rows)  # the grad-cam ms column is empty


def _tiny_vit():
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5).eval()


def test_peers_read_a_vit_block_through_reshape_transform_and_give_our_maps():
    pytest.importorskip("torchcam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchCamGradCAM

    model = _tiny_vit()
    ours = create_explainer("gradcam", model, input_size=(3, 32, 32))
    assert (ours.target_layer, str(ours.layout)) == ("blocks.1.norm1", "tokens:1")
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([0, 2, 4])
    transform = reshape_transform(ours.layout, (32, 32))
    assert transform(torch.zeros(3, 17, 16)).shape == (3, 16, 4, 4) and reshape_transform(None, (32, 32)) is None
    # torch-cam's map on the 4 x 4 patch grid (ReLU, min-max) = ours before upsampling
    extractor = TorchCamGradCAM(model, target_layer=ours.target_layer, reshape_transform=transform)
    try:
        theirs = extractor(class_idx=t.tolist(), scores=model(x))[0]
    finally:
        extractor.remove_hooks()
    raw = ours.unnormalized_maps(x, t).relu()
    low, high = raw.flatten(1).aminmax(dim=1)
    assert torch.allclose(theirs, (raw - low[:, None, None]) / (high - low)[:, None, None], atol=1e-4)
    # grad-cam's 32 x 32 map (min-max, then its own bilinear resize) is ours up to where the two resizes round
    cam = GradCAM(model=model, target_layers=[model.get_submodule(ours.target_layer)], reshape_transform=transform)
    try:
        full = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
    finally:
        cam.activations_and_grads.release()
    assert (torch.from_numpy(full) - ours(x, t)).abs().max() < 0.1
    for call in peer_calls("gradcam", model, ours.target_layer, ours).values():  # the adapters pass it on
        call(x, t, None)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_shapley_peer_gets_our_score_and_kernel_and_is_left_out_on_token_layers(monkeypatch):
    pytest.importorskip("pytorch_grad_cam")
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget

    vit = _tiny_vit().requires_grad_(True)
    ours = create_explainer("shapleycam", vit, input_size=(3, 32, 32))
    assert "grad-cam" not in peer_calls("shapleycam", vit, ours.target_layer, ours)  # its Hessian term fails there
    model = resnet18(num_classes=4).eval()
    seen = []

    class Recorder:  # stands in for grad-cam's ShapleyCAM: what it is called with, and the attention kernel then
        def __init__(self, **kwargs):
            self.activations_and_grads = SimpleNamespace(release=lambda: None)

        def __call__(self, input_tensor, targets):
            seen.append((type(targets[0]), torch.backends.cuda.math_sdp_enabled(),
                         torch.backends.cuda.flash_sdp_enabled()))

    monkeypatch.setattr(pytorch_grad_cam, "ShapleyCAM", Recorder)
    for score, target in (("rest", ClassifierOutputReST), ("logit", ClassifierOutputTarget)):
        ours = create_explainer("shapleycam", model, input_size=(3, 32, 32), score=score)
        call = peer_calls("shapleycam", model, ours.target_layer, ours)["grad-cam"]
        call(torch.randn(1, 3, 32, 32), torch.tensor([1]), None)
        assert seen[-1] == (target, True, False)


def test_harness_runs_every_default_row_and_option_on_a_fixed_size_vit_with_both_peers(tmp_path, monkeypatch):
    # a ViT built for 32 x 32 takes no 64 x 64 warm-up image and no 224 x 224 layer probe: every row is built for
    # the timed size; grad-cam's AblationCAM runs through its ViT ablation layer, its ShapleyCAM is left out
    from benchmark.explainers import default_explainers
    from benchmark.metrics import default_metrics

    monkeypatch.setattr(harness, "create_backbone", lambda name: (_tiny_vit(), None))
    out = tmp_path / "vit.md"
    harness.main(["--backbones", "vit_tiny", "--size", "32", "--batch-sizes", "2", "--repeats", "1",
                  "--perturb-repeats", "1", "--options-backbones", "vit_tiny", "--pause", "0", "--out", str(out)])
    text = out.read_text()
    items = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")}
    assert set(default_explainers()) | set(default_metrics()) <= items
    rows = {line.split("|")[1].strip(): line.split("|") for line in text.splitlines() if line.startswith("| ")}
    assert rows["ablationcam"][8].strip() and not rows["shapleycam"][8].strip()  # grad-cam ms
    assert "## Options" in text and "chunk_size=128" in text
    # Grad-CAM beside both peers, through their reshape_transform
    cells = dict(zip([c.strip() for c in text.split("| item ")[1].split("\n")[0].split("|")],
                     [c.strip() for c in rows["gradcam"][1:]]))
    assert cells["floor passes / img"] == "1 G(2)"
    assert all(cells[k] for k in ("ours / forward", "grad-cam ms", "torch-cam ms", "ours / grad-cam",
                                  "ours / torch-cam")), cells


def test_rows_keep_the_rounds_and_the_ratio_cells_show_their_range():
    from perf.measure import Bench

    model = _tiny_vit()
    ours = create_explainer("gradcam", model, input_size=(3, 32, 32))
    bench = Bench("vit", model, ours.target_layer, 32, torch.device("cpu"), 3, pause=0, layout=ours.layout)
    assert bench.channels == 16  # the embedding width, not the 17 tokens
    row = bench.explainer_row("gradcam", 2)
    assert {len(v) for v in row.rounds.values()} == {3} and set(row.rounds) == {"ours", "forward", "floor", *PEERS}
    low, high = row.spread("forward")
    ratios = sorted(o / f for o, f in zip(row.rounds["ours"], row.rounds["forward"]))
    assert low == ratios[0] and high == ratios[-1] and row.ratio("forward") == ratios[1]  # median of the rounds'
    assert row.efficiency() == sorted(f / o for f, o in zip(row.rounds["floor"], row.rounds["ours"]))[1]
    from perf.report import _table_rows

    cell = _table_rows([row])[0][6]
    assert cell.startswith(f"{row.ratio('forward'):.3g}") and (low == high or "[" in cell)


def test_attribution_speed_script_writes_its_table(tmp_path):
    from perf import attributions

    out = tmp_path / "speed_attributions.md"
    attributions.main(["--size", "32", "--repeats", "1", "--pause", "0", "--occlusion-stride", "15", "--methods",
                       "guidedbackprop", "occlusion", "--out", str(out)])
    text = out.read_text()
    assert "| backbone " in text and "| resnet18 " in text
    # occlusion on 32 x 32: the half-patch-padded 76 x 76 image, 45 x 45 patches every 15 px -> ceil(31 / 15) + 1
    # = 4 per axis (captum clips the last window to the edge) -> 4 x 4 positions
    assert "1 F(1) + 16 F(16)" in text and "1 I(1)" in text


def test_targets_name_the_worst_row_and_its_floor():
    from perf.measure import Row
    from perf.report import targets

    grad = Cost(((1, "grad", 1),))
    rows = [Row("vgg16", 1, "gradcam", grad, 0.12, 0.125, 0.1,
                rounds={"ours": [0.125, 0.13, 0.12], "forward": [0.1, 0.1, 0.1], "floor": [0.12, 0.12, 0.12]}),
            Row("resnet18", 8, "layercam", grad, 0.02, 0.021, 0.02),
            Row("resnet18", 1, "max_box_acc", Cost(((1, "sort", 1),)), 0.003, 0.005, 0.02)]
    lines = targets(rows, [])
    # per-round ours / forward: 1.25, 1.3, 1.2 -> median 1.25; floor / forward 1.2 in every round
    assert lines[0] == ("- gradient CAMs, worst ours / plain forward (vgg16 gradcam, batch 1: its floor 1 G(1) is "
                        "1.2 x the forward, efficiency 0.96; target <= 1.2): **1.25** -- NOT met")
    assert lines[-1] == ("- MaxBoxAcc V1 / V2 over 100 thresholds, worst ours / plain forward (resnet18 max_box_acc, "
                         "batch 1; target <= 0.3): **0.25** -- met")


def test_chunk_sweep_writes_the_results_file(tmp_path):
    from perf import chunks

    out = tmp_path / "chunks.md"
    chunks.main(["--backbones", "resnet18", "--size", "32", "--repeats", "2", "--chunks", "8", "32", "--pause", "0",
                 "--batch", "2", "--metrics", "deletion", "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# Chunk sizes of the perturbation methods (32x32, random init, 2 images per call)")
    assert "- command: `python -m perf.chunks --backbones resnet18" in text and "2 alternated rounds" in text
    assert "| resnet18   | scorecam | 32 (default) |" in text and "| resnet18   | scorecam | 8  " in text
    assert "| 32 " not in text.split("32 (default)")[1].split("deletion")[0]  # the default is not timed twice
    # the curve: its default 64, then 8 and 32; grouping the forwards changes no AUC here
    deletion = [line for line in text.splitlines() if line.startswith("| resnet18   | deletion ")]
    assert [line.split("|")[3].strip() for line in deletion] == ["64 (default)", "8", "32"]
    with pytest.raises(SystemExit):
        chunks.main(["--chunks", "0"])
    with pytest.raises(SystemExit):
        chunks.main(["--batch", "65"])  # beyond the harness's 64 fixed images


def test_attention_kernel_script_times_both_shapley_variants_side_by_side(tmp_path):
    from perf import attention_kernel

    out = tmp_path / "kernel.md"
    attention_kernel.main(["--backbone", "timm/vit_tiny_patch16_224", "--batch-sizes", "1", "--repeats", "2",
                           "--device", "cpu", "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# Shapley-CAM's attention kernel on timm/vit_tiny_patch16_224")
    assert "- command: `python -m perf.attention_kernel --backbone timm/vit_tiny_patch16_224" in text
    row = next(line for line in text.splitlines() if line.startswith("| 1 |")).split(" | ")
    assert len(row) == 8 and all(float(cell) > 0 for cell in row[1:5])
    assert all("[" in cell for cell in row[5:])  # two rounds: a median and its range
