"""A per-sample file that cannot be read (a damaged disk, a copy cut short: the run's own writes are atomic) is a
one-line refusal naming it when rendering, and a resume recomputes it: the results are then those of the undamaged
run, byte for byte."""
from benchmark.cli import console

RUN = ["run", "--backbones", "[synthetic/res_cnn]", "--data_args", "{size: 6}", "--batch_size", "3", "--explainers",
       "[gradcam]", "--metrics", "[complexity, average_drop]", "--bootstrap", "10", "--trainer.accelerator", "cpu",
       "--trainer.enable_progress_bar", "false"]


def test_an_unreadable_shard_is_refused_when_rendering_and_recomputed_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert console([*RUN, "--out", str(out)]) == 0
    undamaged = (out / "results.csv").read_bytes()
    shard = out / "per_sample" / "synthetic--res_cnn" / "gradcam" / "shard_0000001.parquet"
    shard.write_bytes(shard.read_bytes()[:40])  # cut short: no footer
    capsys.readouterr()
    assert console(["leaderboard", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"Unreadable per-sample file {str(shard)!r}" in err and "rerun the same `cam-bench run`" in err
    assert err.count("\n") == 1  # one line, no traceback
    assert console([*RUN, "--out", str(out)]) == 0
    assert (out / "results.csv").read_bytes() == undamaged
    assert len(shard.read_bytes()) > 40
