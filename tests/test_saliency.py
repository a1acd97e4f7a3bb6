"""The hallucinated-saliency method (PAPERS.md §2): the modulated classifier, the branch
file, the two steps and what each trains, its defaults and its bad-input lines.

The layers themselves (modulation against NumPy, the branch's shapes) are tested in
``test_saliency_layers.py``; the scheme contract (XLA, mixed precision, saving in
safe mode in a fresh process) in ``test_contract.py``, which finds the method in
the registry.
"""

import json

import keras
import numpy as np
import pytest
from conftest import make_classifier, structured_images
from test_resume import history_rows, interrupt_after

from playing_distraction.backbones import BACKBONES, build_classifier, save_backbone
from playing_distraction.cli import train_main
from playing_distraction.config import TrainConfig, parse_config
from playing_distraction.errors import UserError
from playing_distraction.modulated import (
    BRANCH,
    MODULATION,
    fusion_output,
    load_branch,
    modulated_classifier,
    plain_classifier,
    save_branch,
)
from playing_distraction.stages import compile_model, set_trainable
from playing_distraction.training import build_model

SIZE, CLASSES = 32, 3


def modulated(seed=0, **options):
    plain = make_classifier(CLASSES, SIZE, seed=seed)
    return plain, modulated_classifier(plain, "block2b", shape="narrow", seed=seed, **options)


# ------------------------------------------------------------------ the registry


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_has_a_fusion_layer_with_a_feature_map(name):
    spec = BACKBONES[name]
    size = 32 if name == "small_cnn" else 75
    classifier = build_classifier(name, CLASSES, size)
    output = fusion_output(classifier, spec.fusion_layer)
    assert len(output.shape) == 4 and output.shape[1] >= 2


@pytest.mark.parametrize("name", ["resnet50", "resnet152", "densenet121"])
def test_the_default_fusion_layer_is_at_output_stride_8(name):
    # The paper's best AlexNet fusion is 27 x 27 at 227 px; ResNet's conv3_block1_out
    # is 28 x 28 at 224 (here 8 x 8 at 64).
    classifier = build_classifier(name, CLASSES, 64)
    assert fusion_output(classifier, BACKBONES[name].fusion_layer).shape[1:3] == (8, 8)


def test_resnet152_is_in_the_registry_with_keras_applications_layer_names():
    spec = BACKBONES["resnet152"]
    assert spec.application == "ResNet152" and spec.preprocessing == "caffe"
    classifier = build_classifier("resnet152", CLASSES, 32)
    for layer in (spec.last_conv, spec.cam_module_layer, spec.fusion_layer):
        classifier.get_layer(layer)


# ------------------------------------------------------------------ the classifier


def test_a_zero_map_leaves_the_plain_classifier_unchanged():
    plain, model = modulated()
    branch = model.get_layer(BRANCH)
    branch.set_weights([np.zeros_like(w) for w in branch.get_weights()])
    images = structured_images(4, SIZE)
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               plain.predict(images, verbose=0), rtol=1e-5, atol=1e-5)


def test_the_fusion_output_is_multiplied_by_one_plus_the_map():
    _, model = modulated()
    branch = model.get_layer(BRANCH)
    branch.set_weights([w + 0.05 for w in branch.get_weights()])  # a map well above zero
    images = structured_images(4, SIZE)
    probe = keras.Model(model.inputs, [model.get_layer("block2b").output, branch.output,
                                       model.get_layer(MODULATION).output])
    features, saliency, result = (np.asarray(x) for x in probe(images))
    assert saliency.shape == (4, 16, 16, 1) and saliency.min() >= 0 and saliency.max() > 0.1
    np.testing.assert_allclose(result, features * (saliency + 1), rtol=1e-5, atol=1e-6)


def test_layer_names_stay_so_grad_cam_and_the_plain_part_are_reachable():
    plain, model = modulated()
    assert [layer.name for layer in model.layers if layer.name not in (BRANCH, MODULATION)] \
        == [layer.name for layer in plain.layers]
    for layer in plain.layers:
        for ours, theirs in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(ours, theirs)


def test_without_the_branch_it_is_the_plain_classifier_again():
    plain, model = modulated()
    branch = model.get_layer(BRANCH)
    branch.set_weights([w + 0.05 for w in branch.get_weights()])
    stripped = plain_classifier(model)
    assert not any(layer.name in (BRANCH, MODULATION) for layer in stripped.layers)
    assert not set(map(id, stripped.layers)) & set(map(id, model.layers))  # fresh layers
    images = structured_images(3, SIZE)
    np.testing.assert_allclose(stripped.predict(images, verbose=0),
                               plain.predict(images, verbose=0), rtol=1e-5, atol=1e-5)
    assert not np.allclose(model.predict(images, verbose=0), plain.predict(images, verbose=0))


def test_its_backbone_file_is_the_rgb_branch_and_loads_into_a_plain_classifier(tmp_path):
    plain, model = modulated()
    path = tmp_path / "backbone.weights.h5"
    save_backbone(model, "small_cnn", path)
    loaded = build_classifier("small_cnn", CLASSES, SIZE, str(path))
    for name in ("block1a_conv", "features_conv", "features_bn"):
        for ours, theirs in zip(loaded.get_layer(name).get_weights(),
                                plain.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(("name", "message"), [
    ("nowhere", "--fusion-layer nowhere: small_cnn_classifier has no layer of that name"),
    ("head_pool", "--fusion-layer head_pool: not a layer of the backbone"),
])
def test_a_fusion_layer_that_is_not_a_backbone_feature_map_is_refused(name, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        fusion_output(make_classifier(CLASSES, SIZE), name)


def test_a_fusion_layer_without_a_feature_map_is_refused():
    inputs = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten(name="flat")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(flat))
    with pytest.raises(ValueError, match=r"^--fusion-layer flat: its output has shape "
                                         r"\(None, 192\), not a feature map"):
        fusion_output(model, "flat")


def test_an_alexnet_branch_on_32_pixel_images_is_refused_with_the_way_out():
    with pytest.raises(ValueError, match="--image-size 32 is too small for a 4-layer alexnet "
                                         "saliency branch .try --saliency-shape narrow"):
        modulated_classifier(make_classifier(CLASSES, SIZE), "block2b", shape="alexnet")


# ------------------------------------------------------------------ the branch file


def test_the_branch_file_round_trips(tmp_path):
    _, first = modulated(seed=1)
    _, second = modulated(seed=2)
    path = tmp_path / "branch.weights.h5"
    save_branch(first, path, "small_cnn", "block2b")
    load_branch(second, path, "small_cnn", "block2b")
    for ours, theirs in zip(second.get_layer(BRANCH).get_weights(),
                            first.get_layer(BRANCH).get_weights()):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(("change", "message"), [
    ({"backbone": "resnet50"}, "trained with --backbone small_cnn, this run has resnet50 "
                               r"\(pass --backbone small_cnn\)"),
    ({"fusion_layer": "block1b"}, "trained with --fusion-layer block2b, this run has block1b"),
    ({"conv_layers": 3}, "trained with --saliency-convs 4, this run has 3"),
])
def test_a_branch_file_of_another_setting_is_refused_naming_the_flag(tmp_path, change,
                                                                     message):
    _, first = modulated()
    path = tmp_path / "branch.weights.h5"
    save_branch(first, path, "small_cnn", "block2b")
    plain = make_classifier(CLASSES, SIZE)
    fusion = change.get("fusion_layer", "block2b")
    other = modulated_classifier(plain, fusion, change.get("conv_layers", 4), "narrow")
    with pytest.raises(UserError, match=f"^--saliency-branch {path} was {message}"):
        load_branch(other, path, change.get("backbone", "small_cnn"), fusion)


def test_a_file_that_is_not_a_branch_file_is_refused(tmp_path):
    _, model = modulated()
    text = tmp_path / "notes.txt"
    text.write_text("not HDF5")
    with pytest.raises(UserError, match="not a saliency branch file .HDF5"):
        load_branch(model, text, "small_cnn", "block2b")
    backbone = tmp_path / "backbone.weights.h5"
    save_backbone(model, "small_cnn", backbone)
    with pytest.raises(UserError, match="not a saliency branch file .it does not record its "
                                        "fusion_layer"):
        load_branch(model, backbone, "small_cnn", "block2b")


# ------------------------------------------------------------------ what each step trains


def source_model(tmp_path, classes=CLASSES):
    path = tmp_path / "source" / "model.keras"
    path.parent.mkdir()
    make_classifier(classes, SIZE, seed=5).save(path)
    return path


def trained(config, steps=2):
    """The classifier before and after ``steps`` SGD steps at a high rate, as the
    method's stage sets what trains."""
    keras.utils.set_random_seed(0)
    classifier, model = build_model(config, CLASSES)
    stage = config.method_options().stages(config)[0]
    set_trainable(model, stage)
    compile_model(model, config)
    before = {layer.name: [np.array(w) for w in layer.weights] for layer in classifier.layers}
    images = structured_images(16, SIZE, seed=1)
    labels = np.arange(16) % CLASSES
    model.fit(images, labels, batch_size=8, epochs=steps // 2, verbose=0, shuffle=False)
    changed = {name: any(not np.array_equal(old, np.asarray(new))
                         for old, new in zip(values, classifier.get_layer(name).weights))
               for name, values in before.items() if values}
    return classifier, changed


def config_of(*argv):
    return parse_config(["--dataset", "fashion-mnist", "--classes", "0", "1", "2",
                         "--method", "saliency", "--weights", "none", "--learning-rate", "0.05",
                         "--jit-compile", "off", *argv])


def test_step_1_trains_the_branch_and_nothing_else(tmp_path):
    config = parse_config(["--dataset", "fashion-mnist", "--classes", "0", "1", "2",
                           "--method", "saliency", "--saliency-step", "1",
                           "--saliency-source", str(source_model(tmp_path)),
                           "--learning-rate", "0.05", "--jit-compile", "off"])
    _, changed = trained(config)
    assert changed.pop(BRANCH)
    assert not any(changed.values()), [name for name, moved in changed.items() if moved]


def test_approach_a_freezes_exactly_the_branch(tmp_path):
    _, step_1 = modulated(seed=3)
    branch = tmp_path / "saliency_branch.weights.h5"
    save_branch(step_1, branch, "small_cnn", "block2b")
    _, changed = trained(config_of("--saliency-branch", str(branch), "--approach", "A"))
    assert not changed.pop(BRANCH)
    frozen = [name for name, moved in changed.items() if not moved and name != "preprocess"]
    assert not frozen, frozen


@pytest.mark.parametrize("branch", [True, False], ids=["approach_b", "scratch"])
def test_approach_b_and_the_scratch_baseline_train_everything(tmp_path, branch):
    extra = ()
    if branch:
        _, step_1 = modulated(seed=3)
        path = tmp_path / "saliency_branch.weights.h5"
        save_branch(step_1, path, "small_cnn", "block2b")
        extra = ("--saliency-branch", str(path))
    classifier, changed = trained(config_of(*extra))
    assert changed.pop(BRANCH)
    assert not changed.pop("preprocess")  # the frozen preprocessing, as in every method
    frozen = [name for name, moved in changed.items() if not moved]
    assert not frozen, frozen
    if branch:  # the branch started from the step-1 file, not from scratch
        assert classifier.get_layer(BRANCH).trainable


def test_approach_a_starts_from_the_step_1_branch(tmp_path):
    _, step_1 = modulated(seed=3)
    path = tmp_path / "saliency_branch.weights.h5"
    save_branch(step_1, path, "small_cnn", "block2b")
    classifier, _ = build_model(config_of("--saliency-branch", str(path), "--approach", "A"),
                                CLASSES)
    for ours, theirs in zip(classifier.get_layer(BRANCH).get_weights(),
                            step_1.get_layer(BRANCH).get_weights()):
        np.testing.assert_array_equal(ours, theirs)


# ------------------------------------------------------------------ flags and defaults


def test_the_papers_settings_are_the_defaults_and_every_one_is_a_flag():
    config = parse_config(["--method", "saliency"])
    assert (config.optimizer, config.learning_rate, config.weight_decay, config.momentum,
            config.epochs) == ("sgd", 1e-4, 5e-3, 0.9, 70)
    assert (config.saliency_step, config.approach, config.saliency_convs, config.fusion_layer,
            config.saliency_shape) == (2, "B", 4, "block2b", "narrow")
    given = parse_config(["--method", "saliency", "--optimizer", "adam", "--learning-rate",
                          "0.001", "--weight-decay", "0", "--epochs", "3"])
    assert (given.optimizer, given.learning_rate, given.weight_decay, given.epochs) == (
        "adam", 1e-3, 0.0, 3)
    # Other methods keep theirs.
    plain = parse_config([])
    assert (plain.optimizer, plain.learning_rate, plain.weight_decay, plain.epochs) == (
        "adam", 5e-5, 0.0, 6)
    resnet = parse_config(["--method", "saliency", "--backbone", "resnet152"])
    assert (resnet.fusion_layer, resnet.saliency_shape) == ("conv3_block1_out", "alexnet")


@pytest.mark.parametrize(("argv", "tag", "column"), [
    ([], "saliency-scratch", "RGB + scratch SAL"),
    (["--saliency-branch", "B"], "saliencyB", "Approach B"),
    (["--saliency-branch", "B", "--approach", "A"], "saliencyA", "Approach A"),
    (["--saliency-branch", "B", "--saliency-convs", "2"], "saliencyB-conv2",
     "Approach B (2 conv)"),
    (["--saliency-step", "1", "--saliency-source", "S"], "saliency1", "saliency step 1"),
])
def test_run_names_and_columns(tmp_path, monkeypatch, argv, tag, column):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "saliency_branch.weights.h5").write_bytes(b"")
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "model.keras").write_bytes(b"")
    config = parse_config(["--method", "saliency", *argv])
    assert config.method_tag == tag and config.column == column
    if "--saliency-branch" in argv:  # a run folder is recorded as the file inside it
        assert config.saliency_branch == "B/saliency_branch.weights.h5"


@pytest.mark.parametrize(("argv", "message"), [
    (["--approach", "A"], "--approach applies to --method saliency only"),
    (["--fusion-layer", "block2b"], "--fusion-layer applies to --method saliency only"),
    (["--method", "saliency", "--approach", "A"],
     "--approach A keeps a step-1 branch frozen: give --saliency-branch"),
    (["--method", "saliency", "--saliency-step", "1"], "--saliency-step 1 needs "
                                                        "--saliency-source"),
    (["--method", "saliency", "--saliency-source", "x.keras"],
     "--saliency-source applies to --saliency-step 1 only"),
    (["--method", "saliency", "--saliency-branch", "missing"],
     "--saliency-branch missing: no such file (nor a run folder with "
     "saliency_branch.weights.h5)"),
    (["--method", "saliency", "--saliency-convs", "5"], "--saliency-convs must be 1 to 4"),
    (["--method", "saliency", "--saliency-step", "1", "--saliency-source", "{src}",
      "--weights", "none"], "--weights does not apply to --saliency-step 1"),
])
def test_bad_flags_are_one_line_before_anything_is_made(tmp_path, capsys, argv, message):
    source = source_model(tmp_path)
    argv = [arg.replace("{src}", str(source)) for arg in argv]
    out = tmp_path / "out"
    assert train_main([*argv, "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


# ------------------------------------------------------------------ the two steps, end to end


def train(fashion_dir, out, *argv):
    return train_main(["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir),
                       "--epochs", "1", "--batch-size", "8", "--verbose", "0",
                       "--out-dir", str(out), "--jit-compile", "off", *argv])


def test_source_run_then_step_1_then_step_2(fashion_dir, tmp_path, capsys):
    out = tmp_path / "models"
    source_classes = ("--classes", "1", "5", "7")
    assert train(fashion_dir, out, *source_classes, "--occlusion", "none") == 0
    source = out / "fashion-mnist-c1.5.7-none-small_cnn-seed0"
    assert train(fashion_dir, out, *source_classes, "--method", "saliency",
                 "--saliency-step", "1", "--saliency-source", str(source)) == 0
    step_1 = out / "fashion-mnist-c1.5.7-saliency1-small_cnn-seed0"
    recorded = json.loads((step_1 / "config.json").read_text())
    assert recorded["saliency_source"] == str(source / "model.keras")
    assert recorded["weights"] == "none" and len(recorded["saliency_source_sha256"]) == 64
    # Step 1 changed nothing but the branch: the backbone file is the source's.
    first = build_classifier("small_cnn", 3, 32, str(source / "backbone.weights.h5"))
    second = build_classifier("small_cnn", 3, 32, str(step_1 / "backbone.weights.h5"))
    for ours, theirs in zip(first.get_weights()[:-2], second.get_weights()[:-2]):  # no head
        np.testing.assert_array_equal(ours, theirs)
    saved = keras.models.load_model(step_1 / "model.keras")
    assert all(layer.trainable for layer in saved.layers if layer.name != "preprocess")

    target = ("--classes", "0", "2", "3")
    assert train(fashion_dir, out, *target, "--method", "saliency", "--saliency-branch",
                 str(step_1), "--approach", "A") == 0
    step_2 = out / "fashion-mnist-c0.2.3-saliencyA-small_cnn-seed0"
    recorded = json.loads((step_2 / "config.json").read_text())
    assert recorded["saliency_branch"] == str(step_1 / "saliency_branch.weights.h5")
    assert recorded["approach"] == "A" and recorded["saliency_step"] == 2
    assert (step_2 / "saliency_branch.weights.h5").is_file()

    # A step-1 source trained on other classes, or a branch file of another fusion
    # layer: one line, no run folder.
    capsys.readouterr()
    assert train(fashion_dir, out, *target, "--method", "saliency", "--saliency-step", "1",
                 "--saliency-source", str(source)) == 1
    assert "was trained on other classes (Trouser, Sandal, Sneaker)" in capsys.readouterr().err
    assert train(fashion_dir, out, *target, "--method", "saliency", "--saliency-branch",
                 str(step_1), "--fusion-layer", "block1b") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained with --fusion-layer block2b" in err
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["fashion-mnist-c1.5.7-none-small_cnn-seed0", step_1.name, step_2.name])


def test_a_resumed_step_2_run_keeps_its_step_1_file(fashion_dir, tmp_path):
    out = tmp_path / "models"
    _, step_1 = modulated(seed=3)
    path = tmp_path / "saliency_branch.weights.h5"
    save_branch(step_1, path, "small_cnn", "block2b")
    argv = ("--classes", "0", "2", "3", "--method", "saliency", "--saliency-branch",
            str(path), "--resume")
    assert train(fashion_dir, out, *argv) == 0
    assert train(fashion_dir, out, *argv) == 0  # finished: skipped
    assert len(list(out.iterdir())) == 1
    config = TrainConfig.from_dict(json.loads(
        (out / "fashion-mnist-c0.2.3-saliencyB-small_cnn-seed0" / "config.json").read_text()))
    assert config.saliency_branch == str(path)


def test_step_1_can_start_from_the_keras_applications_imagenet_classifier(monkeypatch):
    # No download here: the application builds with random weights, as if they were
    # ImageNet's; what is checked is where they go.
    made = {}
    original = keras.applications.ResNet50
    monkeypatch.setattr(keras.applications, "ResNet50",
                        lambda **kwargs: _unwrapped(original, made, kwargs))
    config = TrainConfig(method="saliency", saliency_step=1, saliency_source="imagenet",
                         backbone="resnet50", image_size=75, dataset="fashion-mnist",
                         jit_compile="off").resolved()
    classifier, _ = build_model(config, 1000)
    np.testing.assert_array_equal(classifier.get_layer("logits").get_weights()[0],
                                  made["top"].layers[-1].get_weights()[0])
    np.testing.assert_array_equal(classifier.get_layer("conv1_conv").get_weights()[0],
                                  made["features"].get_layer("conv1_conv").get_weights()[0])
    assert classifier.get_layer(BRANCH) is not None
    with pytest.raises(UserError, match="--saliency-source imagenet needs the 1000 ImageNet "
                                        "classes as the source set, in Keras' order; this one "
                                        "has 3"):
        build_model(config, 3)


def _unwrapped(original, made, kwargs):
    keras.utils.set_random_seed(7 if kwargs.get("include_top") else 8)
    model = original(**{**kwargs, "weights": None})
    made["top" if kwargs.get("include_top") else "features"] = model
    return model


@pytest.mark.parametrize(("argv", "message"), [
    (["--fusion-layer", "nowhere"],
     "train.py: error: --fusion-layer nowhere: small_cnn_classifier has no layer of that name"),
    (["--fusion-layer", "logits"], "train.py: error: --fusion-layer logits: not a layer of "
                                   "the backbone"),
    (["--saliency-shape", "alexnet"], "train.py: error: --image-size 32 is too small for a "
                                      "4-layer alexnet saliency branch (try --saliency-shape "
                                      "narrow or fewer --saliency-convs)"),
])
def test_a_fusion_layer_or_branch_that_does_not_fit_is_one_line_and_no_run(
        fashion_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "models"
    assert train(fashion_dir, out, "--method", "saliency", *argv) == 1
    assert capsys.readouterr().err.strip() == message
    assert not out.exists()


def test_an_interrupted_step_1_run_resumes_to_the_same_result(fashion_dir, tmp_path,
                                                              monkeypatch):
    """Only the branch trains, so the checkpoint's optimizer holds its variables alone."""
    source = tmp_path / "source"
    assert train(fashion_dir, source, "--classes", "1", "5", "7", "--occlusion", "none") == 0
    args = ("--classes", "1", "5", "7", "--method", "saliency", "--saliency-step", "1",
            "--saliency-source", str(next(source.iterdir())), "--epochs", "3",
            "--learning-rate", "0.01")
    assert train(fashion_dir, tmp_path / "whole", *args) == 0
    whole = next((tmp_path / "whole").iterdir())
    with monkeypatch.context() as patch:
        interrupt_after(0, patch)
        assert train(fashion_dir, tmp_path / "cut", *args) == 130
    run = tmp_path / "cut" / whole.name
    assert train(fashion_dir, tmp_path / "cut", *args, "--resume") == 0
    assert history_rows(run) == history_rows(whole)
    assert (run / "predictions.csv").read_text() == (whole / "predictions.csv").read_text()
    assert ((run / "saliency_branch.weights.h5").read_bytes()
            == (whole / "saliency_branch.weights.h5").read_bytes())
