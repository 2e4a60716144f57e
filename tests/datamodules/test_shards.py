"""Fixed-composition shards: every position exactly once over the ranks, same batches for any world size."""
import pytest
import pytorch_lightning as pl

from datamodules import create_datamodule
from datamodules.shards import ShardBatchSampler, current_shard, num_shards


@pytest.mark.parametrize("size, batch_size", [(0, 3), (1, 3), (10, 3), (12, 4), (13, 1)])
@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_ranks_cover_every_position_once_with_the_same_batches(size, batch_size, world_size):
    batches = {}
    for rank in range(world_size):
        sampler = ShardBatchSampler(size, batch_size, rank, world_size)
        assert len(sampler) == len(sampler.shards)
        for shard, batch in zip(sampler.shards, sampler):
            assert shard % world_size == rank and shard not in batches
            batches[shard] = batch
    assert sorted(batches) == list(range(num_shards(size, batch_size)))
    assert [i for s in sorted(batches) for i in batches[s]] == list(range(size))
    single = ShardBatchSampler(size, batch_size)  # one process: the same batch for every shard
    assert dict(zip(single.shards, single)) == batches


def test_skipped_shards_are_not_yielded_and_bad_arguments_are_refused():
    sampler = ShardBatchSampler(10, 2, 0, 1, skip={1, 3})
    assert sampler.shards == [0, 2, 4] and list(sampler) == [[0, 1], [4, 5], [8, 9]]
    for args in [(10, 0), (-1, 2), (10, 2, 2, 2)]:
        with pytest.raises(ValueError, match="Expected size >= 0"):
            ShardBatchSampler(*args)


class _Shards(pl.Callback):
    def __init__(self):
        self.seen = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.seen.append((current_shard(trainer, batch_idx, dataloader_idx), batch["index"].tolist()))


class _Identity(pl.LightningModule):
    def predict_step(self, batch, batch_idx):
        return batch["index"]


# Lightning cannot know that a custom batch sampler yields every index; benchmark.runner.run filters the same warning
@pytest.mark.filterwarnings("ignore:.*custom batch sampler `ShardBatchSampler`")
def test_a_datamodule_in_shards_under_a_real_trainer_skips_and_limits():
    dm = create_datamodule("synthetic", size=10, image_size=32, batch_size=3)
    dm.use_shards(skip={1}, limit=8)
    spy = _Shards()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False, callbacks=[spy])
    trainer.predict(_Identity(), datamodule=dm, return_predictions=False)
    assert spy.seen == [(0, [0, 1, 2]), (2, [6, 7])]
    assert dm.used_size() == 8
