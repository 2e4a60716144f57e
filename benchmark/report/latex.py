"""The leaderboard's tables as booktabs LaTeX, for a paper: the same cells, bolds and arrows as the markdown.

:func:`latex_table` renders one backbone's table with :meth:`pandas.io.formats.style.Styler.to_latex` (the
cells are the markdown's text, unbolded; the best cells are bolded by the Styler, ``\\bfseries``);
:func:`latex_document` joins the tables of a run into ``leaderboard.tex``, to ``\\input`` in a paper that
loads ``booktabs``; :func:`table_caption` writes a table's caption, where a paper's reader sees a partial run.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import pandas as pd

__all__ = ["latex_document", "latex_table", "table_caption"]

_SYMBOLS = (("±", r"$\pm$"), ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"), ("ρ", r"$\rho$"), ("–", "--"))


def _tex(text: str) -> str:
    """Escape LaTeX specials (as pandas does), then spell the leaderboard's symbols in LaTeX.

    Examples:
        >>> _tex("83.68 ± 1.01"), _tex("Avg Drop ↓"), _tex("– (3 of 96 undefined)"), _tex("grad_cam")
        ('83.68 $\\\\pm$ 1.01', 'Avg Drop $\\\\downarrow$', '-- (3 of 96 undefined)', 'grad\\\\_cam')
    """
    text = re.sub(r"([&%$#_{}])", r"\\\1", text).replace("~", r"\textasciitilde{}").replace("^", r"\^{}")
    for symbol, tex in _SYMBOLS:
        text = text.replace(symbol, tex)
    return text


def table_caption(name: str, rows: Mapping[str, int], n: Optional[int], partial: bool) -> str:
    """The caption of one backbone's table: the number of images counted from its rows, and a partial run said in
    the typeset text (a paper shows the caption, not the file's comments).

    Args:
        name: ``"<dataset> / <backbone>"``.
        rows: method -> its rows (images) on disk.
        n: the run's sample count (``None``: a stream without a row count).
        partial: some method lacks samples (:func:`benchmark.runner.folder.run_gaps`).

    Examples:
        >>> table_caption("synthetic / res_cnn", {"gradcam": 8, "fakecam": 8, "center": 16}, 16, True)
        'synthetic / res_cnn: INCOMPLETE (a partial run, not final): 8 of 16 images for gradcam, fakecam; 16 of 16 \
images for center; mean over these images ± half the 95 % bootstrap interval; bold: best at the precision shown.'
        >>> table_caption("synthetic / res_cnn", {"gradcam": 16}, 16, False).split(" ±")[0]
        'synthetic / res_cnn: mean over 16 images'
        >>> table_caption("hf / vit", {"gradcam": 5}, None, False).split(" ±")[0]
        'hf / vit: mean over 5 (counted: the stream has no row count) images'
    """
    tail = " ± half the 95 % bootstrap interval; bold: best at the precision shown."
    if not partial:
        counted = f"{max(rows.values(), default=0)} (counted: the stream has no row count)"
        return f"{name}: mean over {counted if n is None else n} images{tail}"
    groups: Dict[int, List[str]] = {}
    for method, count in rows.items():
        groups.setdefault(int(count), []).append(str(method))
    of = f" of {n}" if n is not None else ""
    counts = "; ".join(f"{count}{of} images for {', '.join(methods)}" for count, methods in groups.items())
    why = "a partial run, not final" + ("" if n is not None else "; the stream was not read to the end")
    return f"{name}: INCOMPLETE ({why}): {counts}; mean over these images{tail}"


def latex_table(cells: pd.DataFrame, bold: pd.DataFrame, caption: str, label: str) -> str:
    """One booktabs table: a row per method, a column per metric.

    Args:
        cells: index = methods, columns = column titles (with their arrows), values = the cell text as the
            markdown shows it without bold (``"83.68 ± 1.01"``, ``"– (3 of 96 undefined)"``).
        bold: same shape, True where the markdown bolds the cell (the best at the precision shown).
        caption, label: the table's ``\\caption`` (plain text, escaped here) and ``\\label``.

    Examples:
        >>> cells = pd.DataFrame({"ADCC ↑": ["83.68 ± 1.01", "0.02 ± 0.00"]}, index=["gradcam", "fakecam"])
        >>> bold = pd.DataFrame({"ADCC ↑": [True, False]}, index=cells.index)
        >>> print(latex_table(cells, bold, "ADCC on res_cnn", "tab:res"))  # doctest: +NORMALIZE_WHITESPACE
        \\begin{table}
        \\centering
        \\caption{ADCC on res\\_cnn}
        \\label{tab:res}
        \\begin{tabular}{lr}
        \\toprule
        Method & ADCC $\\uparrow$ \\\\
        \\midrule
        gradcam & \\bfseries 83.68 $\\pm$ 1.01 \\\\
        fakecam & 0.02 $\\pm$ 0.00 \\\\
        \\bottomrule
        \\end{tabular}
        \\end{table}
        <BLANKLINE>
    """
    if cells.shape != bold.shape:
        raise ValueError(f"Expected `bold` to have the shape of `cells` {cells.shape}, but got {bold.shape}.")
    frame = cells.copy()
    frame.index = [_tex(str(m)) for m in frame.index]
    frame.columns = pd.Index([_tex(str(c)) for c in frame.columns], name="Method")
    marks = pd.DataFrame(bold.to_numpy(), index=frame.index, columns=frame.columns)
    styler = frame.style.format(lambda v: _tex(str(v)), escape=None)
    styler = styler.apply(lambda _: marks.replace({True: "font-weight: bold", False: ""}), axis=None)
    return styler.to_latex(hrules=True, column_format="l" + "r" * frame.shape[1], convert_css=True,
                           caption=_tex(caption), label=label, position_float="centering")


def latex_document(tables: Iterable[Tuple[pd.DataFrame, pd.DataFrame, str, str]], title: str) -> str:
    """The tables of a run, one after the other, under a comment naming the run (``\\input`` it; needs
    ``\\usepackage{booktabs}``).

    Examples:
        >>> cells = pd.DataFrame({"ADCC ↑": ["1.00"]}, index=["a"])
        >>> latex_document([(cells, cells == "1.00", "c", "tab:a")], "synthetic (val)").splitlines()[0]
        '% cam-bench leaderboard: synthetic (val). Needs \\\\usepackage{booktabs}.'
    """
    body = "\n".join(latex_table(cells, bold, caption, label) for cells, bold, caption, label in tables)
    return f"% cam-bench leaderboard: {title}. Needs \\usepackage{{booktabs}}.\n{body}"
