"""The shape of the package: what imports what, the method registry's rules, the flags
it generates, and the optimizer choice."""

import dataclasses
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from playing_distraction import methods
from playing_distraction.config import TrainConfig, build_parser, parse_config
from playing_distraction.stages import make_optimizer


def imported_after(module):
    """The playing_distraction modules and TensorFlow that importing ``module`` loads."""
    code = (f"import sys, {module}; print(' '.join(sorted(name for name in sys.modules "
            "if name.startswith('playing_distraction') or name == 'tensorflow')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split())


def test_schemes_know_nothing_of_flags_files_or_datasets():
    loaded = imported_after("playing_distraction.schemes")
    forbidden = {f"playing_distraction.{name}" for name in (
        "config", "methods", "datasets", "layouts", "cli", "run_folders", "training")}
    assert not loaded & forbidden, loaded & forbidden


@pytest.mark.parametrize("module", ["config", "methods", "reports", "runs", "run_folders",
                                    "corruptions", "splits", "choices"])
def test_the_command_line_side_does_not_import_tensorflow(module):
    assert "tensorflow" not in imported_after(f"playing_distraction.{module}")


def test_a_method_may_not_take_a_flag_another_method_has():
    with pytest.raises(ValueError, match="field alpha is already a flag of pairwise"):
        @methods.register(methods.METHODS)
        @dataclasses.dataclass
        class Augmented(methods.Method):
            name = "feature_augmentation"
            title = "method feature_augmentation"
            alpha: float = methods.option(0.9, "probability of a shifted feature")
    assert "feature_augmentation" not in methods.METHODS


def test_every_registered_option_is_a_flag_in_its_methods_help_group():
    parser = build_parser()
    groups = {group.title: {option for action in group._group_actions
                            for option in action.option_strings}
              for group in parser._action_groups}
    for cls in (*methods.METHODS.values(), *methods.ADDONS.values()):
        expected = {methods.flag(field.name) for field in dataclasses.fields(cls)}
        assert expected <= groups[cls.title], cls.name
        for field in dataclasses.fields(cls):
            assert getattr(TrainConfig(), field.name) == field.default
    assert set(parser._option_string_actions["--method"].choices) == set(methods.METHODS)


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_names_its_runs_and_columns_and_builds(name):
    config = parse_config(["--method", name, "--weights", "none"])
    options = config.method_options()
    assert isinstance(options, methods.METHODS[name])
    assert config.default_run_name == (
        f"fashion-mnist-mini-{options.tag()}-small_cnn-seed0")
    assert config.column == options.column()
    assert options.stages(config)


def test_sgd_with_momentum_and_weight_decay():
    config = parse_config(["--optimizer", "sgd", "--momentum", "0.5", "--weight-decay",
                           "0.005", "--learning-rate", "0.001"])
    optimizer = make_optimizer(config)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert (optimizer.momentum, optimizer.weight_decay) == (0.5, 0.005)
    assert float(optimizer.learning_rate) == pytest.approx(0.001)
    adam = make_optimizer(parse_config([]))
    assert isinstance(adam, keras.optimizers.Adam) and adam.weight_decay is None
    assert (adam.beta_1, adam.beta_2, adam.epsilon) == (0.9, 0.999, 7e-7)


def test_weight_decay_shrinks_the_weights_by_learning_rate_times_decay():
    variable = keras.Variable([[2.0, -4.0]])
    optimizer = make_optimizer(parse_config(["--optimizer", "sgd", "--momentum", "0",
                                             "--learning-rate", "0.1", "--weight-decay",
                                             "0.5"]))
    optimizer.apply([keras.ops.zeros((1, 2))], [variable])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), [[1.9, -3.8]], rtol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--optimizer", "sgd", "--beta-1", "0.8"], "--beta-1 applies to --optimizer adam only"),
    (["--momentum", "0.5"], "--momentum applies to --optimizer sgd only"),
    (["--weight-decay", "-1"], "--weight-decay must be 0 or more"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite number, got nan"),
    (["--learning-rate", "0"], "--learning-rate must be positive, got 0.0"),
    (["--optimizer", "sgd", "--momentum", "1"], "--momentum must be in [0, 1)"),
])
def test_optimizer_flags_are_checked(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_config(args)
