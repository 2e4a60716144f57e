"""The predict-time runtime: :class:`~benchmark.runtime.module.ExplainerModule` (the LightningModule that
runs explainers and metrics in ``predict_step``), the model factory (:mod:`benchmark.runtime.backbones`,
:mod:`benchmark.runtime.hf_backbone`), checkpoint reading and the shared types
(:mod:`benchmark.runtime.preprocessing`: ``Preprocessing``, ``Backbone``).

May import :mod:`benchmark.explainers`, :mod:`benchmark.metrics` and :mod:`datamodules.shards`; never the
runner or the reporting. ``preprocessing`` and ``checkpoints`` import nothing of the project.
"""
