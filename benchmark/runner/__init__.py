"""Configuration and run orchestration: :class:`~benchmark.runner.settings.RunConfig` (validated before any
model is built by :mod:`benchmark.runner.config`), :func:`~benchmark.runner.run.run_benchmark` (one
``Trainer.predict`` per backbone) and the run folder's guarantees (:mod:`benchmark.runner.folder`: lock,
fingerprint, shards, completeness, provenance).

May import the runtime (:mod:`benchmark.runtime`, explainers, metrics), :mod:`datamodules`,
:mod:`callbacks` and, to render at the end of a run, :mod:`benchmark.report`; ``settings`` and ``offline``
import at most :mod:`benchmark.catalog` at module level (``cam-bench run --help`` loads no model library).
"""
