"""Lightning's progress bar, showing the backbone, the explainer at work and the images per second."""
from __future__ import annotations

import time
from typing import Any, Optional

from pytorch_lightning.callbacks import TQDMProgressBar

__all__ = ["BenchmarkProgressBar"]


class BenchmarkProgressBar(TQDMProgressBar):
    """``Predicting synthetic/res_cnn: 40%|████ | 2/5 [00:10<00:15, method=scorecam 5/12, img/s=6.1]``.

    ``ExplainerModule`` calls :meth:`on_explainer_start` before each explainer of a batch, so the bar moves
    within the first batch too (``method=gradcampp 3/12``); images per second show once a batch is done.

    Args:
        backbone: shown in the bar's description.

    Examples:
        >>> BenchmarkProgressBar("synthetic/res_cnn").predict_description
        'Predicting synthetic/res_cnn'
    """

    def __init__(self, backbone: str, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.backbone = backbone
        self._start: Optional[float] = None
        self._images = 0
        self._step, self._methods = 0, 0

    @property
    def predict_description(self) -> str:
        return f"Predicting {self.backbone}"

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_predict_start(trainer, pl_module)
        self._start, self._images = time.perf_counter(), 0
        self._step, self._methods = 0, len(getattr(pl_module, "explainers", {}) or {})

    def on_explainer_start(self, method: str) -> None:
        """Show the explainer now running (called by ``ExplainerModule.predict_step``)."""
        if method != "-":
            self._step += 1
            method = f"{method} {self._step}/{self._methods}" if self._methods else method
        bar = getattr(self, "_predict_progress_bar", None)
        if bar is not None and not bar.disable:
            bar.set_postfix(self._postfix(method), refresh=True)

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        image = batch.get("image") if isinstance(batch, dict) else None
        self._images += 0 if image is None else len(image)
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        self._step = 0
        self.on_explainer_start("-")

    def _postfix(self, method: str) -> dict:
        seconds = time.perf_counter() - (self._start or time.perf_counter())
        return {"method": method, "img/s": f"{self._images / seconds:.2f}" if seconds > 0 and self._images else "-"}
