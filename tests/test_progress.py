"""The progress bar moves within the first batch: the explainer at work and its position, images per
second once a batch is done."""
import time

from callbacks.progress import BenchmarkProgressBar


class _Bar:
    disable = False

    def __init__(self):
        self.postfixes = []

    def set_postfix(self, postfix, refresh=True):
        self.postfixes.append(dict(postfix))


def test_the_bar_shows_each_explainer_of_the_first_batch():
    progress = BenchmarkProgressBar("synthetic/res_cnn")
    progress._methods, progress._start = 3, time.perf_counter() - 2.0
    progress._predict_progress_bar = _Bar()
    for method in ("gradcam", "scorecam"):
        progress.on_explainer_start(method)
    assert progress._predict_progress_bar.postfixes == [{"method": "gradcam 1/3", "img/s": "-"},
                                                        {"method": "scorecam 2/3", "img/s": "-"}]
    progress._images = 4
    progress.on_explainer_start("-")
    last = progress._predict_progress_bar.postfixes[-1]
    assert last["method"] == "-" and float(last["img/s"]) > 0
