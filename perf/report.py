"""Markdown of the speed harness: per backbone an explainer and a metric table, the options, the targets."""
from __future__ import annotations

import argparse
import statistics
from typing import Dict, List, Optional, Sequence

from perf.floors import FORWARD_FREE_UNITS, GRADIENT_CAMS
from perf.measure import Row
from perf.options import OptionRow
from perf.peers import PEERS
from perf.timing import round_ratios, run_header

__all__ = ["ratio_cell", "render", "targets"]

HEADERS = ["item", "batch", "floor passes / img", "floor ms", "ours ms", "efficiency", "ours / forward",
           *(f"{p} ms" for p in PEERS), *(f"ours / {p}" for p in PEERS), "peak MiB ours", *(f"peak MiB {p}" for p in
                                                                                            PEERS)]


#: how the ratio cells read (see :func:`spread_cell`)
RATIO_NOTE = ("ratios (ours / forward, ours / peer): the median of the ratios taken within each round "
              "[lowest–highest of them]; efficiency: the median of floor / ours within each round; the ms columns "
              "are medians over the rounds")


def spread_cell(value: Optional[float], spread: Optional[tuple]) -> Optional[str]:
    """``median [min–max]`` of a ratio (the range over rounds, each ratio within one round); the median alone
    when there is no range.

    Examples:
        >>> spread_cell(1.04, (0.98, 1.1)), spread_cell(1.04, (1.04, 1.04)), spread_cell(None, None)
        ('1.04 [0.98–1.1]', '1.04', None)
    """
    if value is None:
        return None
    if spread is None or spread[0] == spread[1]:
        return f"{value:.3g}"
    return f"{value:.3g} [{spread[0]:.3g}–{spread[1]:.3g}]"


def ratio_cell(rounds: Dict[str, List[float]], top: str, bottom: str) -> Optional[str]:
    """``top / bottom`` taken within each round of :func:`~perf.timing.median_time`'s ``rounds``, as a ratio cell:
    the median [lowest–highest] (:func:`spread_cell`); ``None`` without ratios.

    Examples:
        >>> ratio_cell({"ours": [1.0, 3.0, 2.0], "old": [1.0, 2.0, 1.0]}, "ours", "old")
        '1.5 [1–2]'
    """
    ratios = round_ratios(rounds, top, bottom)
    return spread_cell(statistics.median(ratios), (min(ratios), max(ratios))) if ratios else None


def _table_rows(rows: Sequence[Row]) -> List[list]:
    out = []
    for r in rows:
        out.append([r.item, r.batch, r.cost.describe(), None if r.floor is None else r.floor * 1e3, r.ours * 1e3,
                    r.efficiency(), spread_cell(r.ratio("forward"), r.spread("forward")),
                    *(r.peers[p] * 1e3 if p in r.peers else None for p in PEERS),
                    *(spread_cell(r.ratio(p), r.spread(p)) for p in PEERS),
                    r.peak.get("ours"), *(r.peak.get(p) for p in PEERS)])
    return out


def _where(row: Row) -> str:
    return f"{row.backbone} {row.item}, batch {row.batch}"


def targets(rows: Sequence[Row], options: Sequence[OptionRow]) -> List[str]:
    """One line per target of the performance issue: the measured extreme and whether it is met."""
    lines = []

    def line(text: str, value: Optional[float], ok: Optional[bool]) -> None:
        if value is not None:
            lines.append(f"- {text}: **{value:.3g}** -- {'met' if ok else 'NOT met'}")

    grad = [(x, r) for r in rows if r.item in GRADIENT_CAMS and (x := r.ratio("forward")) is not None]
    if grad:
        value, worst_row = max(grad, key=lambda pair: pair[0])
        floors = round_ratios(worst_row.rounds, "floor", "forward") or [worst_row.floor / worst_row.forward]
        floor = statistics.median(floors)
        line(f"gradient CAMs, worst ours / plain forward ({_where(worst_row)}: its floor "
             f"{worst_row.cost.describe()} is {floor:.3g} x the forward, efficiency {worst_row.efficiency():.3g}; "
             "target <= 1.2)", value, value <= 1.2)
    score = [r for r in rows if r.item == "scorecam"]
    ratios = [r.ratio("grad-cam") for r in score]
    ratios = [x for x in ratios if x is not None]
    line("Score-CAM float32, worst ours / grad-cam ScoreCAM (target <= 0.5)", max(ratios, default=None),
         max(ratios, default=1) <= 0.5)
    effs = [r.efficiency() for r in score if r.floor]
    line("Score-CAM, worst efficiency (target >= 0.9)", min(effs, default=None), min(effs, default=0) >= 0.9)
    best: Dict[str, List[float]] = {}
    for o in options:
        if o.item == "scorecam" and o.peer:
            best.setdefault(o.option, []).append(o.peer)
    if best:
        worst = {name: max(v) for name, v in best.items()}
        name = min(worst, key=worst.get)
        line(f"Score-CAM with {name}, worst ours / grad-cam ScoreCAM (target <= 0.5)", worst[name],
             worst[name] <= 0.5)
    metric_items = _metric_items(rows)
    metric = [(r.efficiency(), r) for r in rows if r.floor and r.item in metric_items
              and {u for u, _ in r.cost.units()} - FORWARD_FREE_UNITS]
    if metric:
        value, worst_row = min(metric, key=lambda pair: pair[0])
        line(f"metrics with passes, worst efficiency ({_where(worst_row)}; target >= 0.9)", value, value >= 0.9)
    sweeps = [(r.ratio("forward"), r) for r in rows if r.item in ("max_box_acc", "max_box_acc_v2")]
    if sweeps:
        value, worst_row = max(sweeps, key=lambda pair: pair[0])
        line(f"MaxBoxAcc V1 / V2 over 100 thresholds, worst ours / plain forward ({_where(worst_row)}; "
             "target <= 0.3)", value, value <= 0.3)
    return lines


def render(rows: Sequence[Row], options: Sequence[OptionRow], args: argparse.Namespace, command: str,
           seconds: float) -> str:
    """The committed results file."""
    from tabulate import tabulate

    def table(data: List[list], headers: List[str]) -> str:
        return tabulate(data, headers=headers, tablefmt="pipe", floatfmt=".3g", missingval="")

    lines = [f"# Speed: every explainer and metric against its forward-pass floor and the peers ({args.size}x"
             f"{args.size}, random init)", "", *run_header(command, seconds, args.device),
             f"- batch sizes {args.batch_sizes} ({args.repeats} alternated rounds, medians); the perturbation "
             f"explainers (Score-CAM, SS-CAM, IS-CAM, Ablation-CAM, RISE), deletion and insertion on "
             f"{args.perturb_images} image(s) ({args.perturb_repeats} rounds); times are per image",
             *([f"- explainer options (ours and the peers): {getattr(args, 'explainer_options')}"]
               if getattr(args, "explainer_options", None) else []),
             *(["- peers: not run (`--no-peers`): no time or ratio of grad-cam or torch-cam in this file, and no "
                "target stated against them"] if not getattr(args, "peers", True) else []),
             "- floor passes: F(b) = plain batched forward at batch b, C(b) = the same forward on the "
             "batch-norm-folded inference copy our masked and perturbed forwards run on, G(b) = forward + backward "
             "from the logits to the target layer, T(b) = the layers after the target layer, H(b) = forward + "
             "backward through them (a Hessian-vector product's extra pass), I(b) = forward + "
             "backward to the input, E(b) = one explainer call, S(b) = one sort of a map's pixels, R(b) = one "
             "reduction over a map's pixels (the forward-free work's floor: floor ms / forward ms of the same row "
             "in forward-equivalents); all timed in the same rounds; efficiency = floor / ours",
             f"- {RATIO_NOTE}", "", "## Targets", "",
             *targets(rows, options), ""]
    metric_names = set(_metric_items(rows))
    for backbone in dict.fromkeys(r.backbone for r in rows):
        mine = [r for r in rows if r.backbone == backbone]
        lines += [f"## {backbone}", ""]
        for title, part in (("Explainers", [r for r in mine if r.item not in metric_names]),
                            ("Metrics (given the Grad-CAM map; `+`: computed together)",
                             [r for r in mine if r.item in metric_names])):
            if part:  # a run without explainers or metrics (e.g. ``--metrics`` with none) has no such table
                lines += [f"### {title}", "", table(_table_rows(part), HEADERS), ""]
        notes = {r.note for r in mine if r.note}
        if notes:
            lines += ["Peers' metrics: " + "; ".join(sorted(f"`{n}`" for n in notes)), ""]
    if options:
        lines += ["## Options", "", "Ratio = option / default (below 1: faster), the median of the ratios taken "
                  "within each round [lowest–highest]; diff = largest absolute difference of "
                  "the option's output (maps in [0, 1], logits or probabilities) from the default's.", "",
                  table([[o.backbone, o.item, o.batch, o.option, o.default * 1e3, o.ours * 1e3,
                          spread_cell(o.ratio, o.spread), o.peer, o.diff, o.one_off] for o in options],
                        ["backbone", "item", "batch", "option", "default ms", "option ms", "ratio",
                         "option / grad-cam", "diff", "one-off s"]), "",
                  "`option / grad-cam` = ratio x (ours / grad-cam of the default in the main table).", ""]
    return "\n".join(lines) + "\n"


def _metric_items(rows: Sequence[Row]) -> Dict[str, None]:
    from benchmark.metrics import list_metrics

    names = set(list_metrics())
    return {r.item: None for r in rows if set(r.item.split("+")) & names}
