"""Loading a model for inference: typed metadata, and only a bad file is the user's fault."""

import zipfile

import keras
import pytest

from minc_keras.core.errors import DatasetError
from minc_keras.inference.segmenter import Segmenter
from minc_keras.models import saving
from minc_keras.models.info import ModelInfo, attach_info, read_info


def _tiny() -> keras.Model:
    inputs = keras.Input(shape=(None, None, 1))
    return keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="softmax")(inputs))


def test_model_info_round_trips_and_keeps_keys_it_does_not_know(tmp_path):
    stored = {"class_values": [0, 4, 7], "class_names": ["background", "a", "b"],
              "num_outputs": 3, "view": "coronal", "multiple": 8, "crop_margin": 2,
              "from_the_future": {"x": 1}}
    path = tmp_path / "m.keras"
    attach_info(_tiny(), stored).save(path)
    model, info = saving.load_trained(path, compile=False)
    assert isinstance(info, ModelInfo)
    assert (info.view, info.multiple, info.classes) == ("coronal", 8, 3)
    assert info.preprocessor.crop_margin == 2
    assert info.extra == {"from_the_future": {"x": 1}}
    assert ModelInfo.from_dict(info.to_dict()) == info == read_info(model)
    assert {k: info.to_dict()[k] for k in stored} == stored
    # TRANSITIONAL: dict-style reads still work for code not yet converted
    assert info.view == "coronal"
    assert info.class_offsets is None
    assert info.to_dict()["from_the_future"] == {"x": 1}


def test_a_segmenter_accepts_stored_dictionaries_and_types_them():
    segmenter = Segmenter([(_tiny(), {"view": "axial", "multiple": 4, "shift_passes": 2})])
    assert isinstance(segmenter.info, ModelInfo)
    assert segmenter.shift_passes == [2]
    assert segmenter.views == ["axial"]


def test_a_missing_file_says_to_check_the_path(tmp_path):
    with pytest.raises(DatasetError, match=r"no model file at .*check the path.*train"):
        saving.load_trained(tmp_path / "missing.keras")


@pytest.mark.parametrize("error", [zipfile.BadZipFile("bad"), ValueError("bad config"),
                                   TypeError("bad arg"), OSError("unreadable"),
                                   KeyError("model has no minc-keras information layer")])
def test_a_bad_file_is_a_dataset_error(tmp_path, monkeypatch, error):
    path = tmp_path / "m.keras"
    path.write_bytes(b"not a model")

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(saving, "_load_model", fail)
    with pytest.raises(DatasetError, match="is not a model saved by this version"):
        saving.load_trained(path)


def test_a_bug_while_loading_is_not_blamed_on_the_file(tmp_path, monkeypatch):
    path = tmp_path / "m.keras"
    path.write_bytes(b"not a model")

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(saving, "_load_model", bug)
    with pytest.raises(ZeroDivisionError):
        saving.load_trained(path)
