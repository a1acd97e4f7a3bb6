"""The training config: paper defaults, dataset-dependent resolution, flag parsing."""

import pytest

from playing_distraction.augmentation import Augmentation
from playing_distraction.config import TrainConfig, parse_config


def test_paper_augmentation_is_the_default():
    config = parse_config([])
    assert (config.augment, config.flip, config.rotation, config.channel_shift,
            config.brightness) == (True, True, 40.0, 30.0, (0.5, 1.5))
    assert config.augmentation() == Augmentation(True, 40.0, 30.0, (0.5, 1.5))


def test_augmentation_flags():
    config = parse_config(["--no-flip", "--rotation", "10", "--channel-shift", "0",
                           "--brightness", "0.8", "1.2"])
    assert config.augmentation() == Augmentation(False, 10.0, 0.0, (0.8, 1.2))
    assert isinstance(config.brightness, tuple)
    assert parse_config(["--no-augment"]).augmentation() is None


@pytest.mark.parametrize("dataset, size, oversample", [
    ("fashion-mnist-mini", 32, 0),
    ("cars", 224, 0),
    ("aircraft", 224, 0),
    ("folder", 224, 0),
    ("egofoodplaces", 250, 4),  # the paper's input size and oversampling for this set
])
def test_dataset_defaults(dataset, size, oversample):
    config = parse_config(["--dataset", dataset, "--weights", "none"])
    assert config.image_size == size and config.oversample == oversample


def test_dataset_options_resolve_only_for_their_dataset():
    aircraft = parse_config(["--dataset", "aircraft", "--weights", "none"])
    assert aircraft.dataset_options() == {
        "aircraft_level": "variant", "remove_banner": False}
    ego = parse_config(["--dataset", "egofoodplaces", "--weights", "none"])
    assert ego.dataset_options() == {"event_split": (0.7, 0.1, 0.2)}
    cars = parse_config(["--dataset", "cars", "--weights", "none", "--crop-to-box"])
    assert cars.dataset_options() == {"crop_to_box": True}
    mini = parse_config([])
    assert mini.dataset_options() == {} and mini.aircraft_level is None


def test_explicit_values_win_over_dataset_defaults():
    config = parse_config(["--dataset", "egofoodplaces", "--weights", "none", "--image-size",
                           "224", "--oversample", "0", "--event-split", "0.6", "0.2", "0.2"])
    assert (config.image_size, config.oversample, config.event_split) == (224, 0, (0.6, 0.2, 0.2))


def test_event_split_must_keep_train_and_test():
    with pytest.raises(ValueError, match="--event-split"):
        TrainConfig(dataset="egofoodplaces", event_split=(0.8, 0.2, 0.0)).resolved()


def test_from_dict_reads_a_saved_config_back():
    """config.json holds lists and extra keys; from_dict gives the same config back."""
    import json

    config = parse_config(["--dataset", "egofoodplaces", "--weights", "none"])
    saved = json.loads(json.dumps(config.to_dict() | {"class_names": ["a"], "data_path": "/d"}))
    assert isinstance(saved["brightness"], list)
    assert TrainConfig.from_dict(saved) == config
