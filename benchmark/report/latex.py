"""The leaderboard's tables as booktabs LaTeX, for a paper: the same cells, bolds and arrows as the markdown.

:func:`latex_table` renders one backbone's table with :meth:`pandas.io.formats.style.Styler.to_latex` (the
cells are the markdown's text, unbolded; the best cells are bolded by the Styler, ``\\bfseries``);
:func:`latex_document` joins the tables of a run into ``leaderboard.tex``, to ``\\input`` in a paper that
loads ``booktabs``.
"""
from __future__ import annotations

import re
from typing import Iterable, Tuple

import pandas as pd

__all__ = ["latex_document", "latex_table"]

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
