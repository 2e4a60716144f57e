"""The datamodule registry: every registered datamodule is reachable by name, bad names and arguments list choices."""
import inspect

import pytest
import pytorch_lightning as pl

from datamodules import create_datamodule, describe_datamodule, list_datamodules
from datamodules.base import CamDataModule
from datamodules.registry import DATAMODULES


@pytest.mark.parametrize("name", list_datamodules())
def test_registered_datamodule(name):
    cls = DATAMODULES[name]
    assert issubclass(cls, pl.LightningDataModule) and describe_datamodule(name)
    params = inspect.signature(cls.__init__).parameters
    assert {"batch_size", "num_workers"} <= set(params)
    if issubclass(cls, CamDataModule):
        assert {"preprocessing", "on_error"} <= set(params)
    with pytest.raises(TypeError, match=r"Unknown arguments \['bogus'\] for datamodule .* valid: \[.*'batch_size'"):
        create_datamodule(name, bogus=1)


def test_unknown_name_lists_close_matches_and_every_name():
    with pytest.raises(KeyError, match=r"Did you mean \['imagenet'\]\?") as err:
        create_datamodule("imagenett")
    assert f"Valid: {list_datamodules()}." in str(err.value)


def test_missing_files_say_how_to_fix(tmp_path):
    for name in ("imagenet", "voc2007"):
        dm = create_datamodule(name, root=tmp_path / "missing")
        with pytest.raises(FileNotFoundError, match="missing"):
            dm.prepare_data()
