"""The serving export of evaluate.py (export.py, --export): every run's classifier as a
TensorFlow SavedModel that serves the saved model's logits in a process that cannot
import this package, with an export.json that names its classes, and the refusals."""

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import fashion_part

from playing_distraction import evaluation, export
from playing_distraction.cli import evaluate_main, train_main
from playing_distraction.errors import UserError
from playing_distraction.layouts import write_fashion_mnist
from playing_distraction.runs import Method, load_run

HAS_CONVERTER = hasattr(getattr(tf, "lite", None), "TFLiteConverter")

# Run in a fresh interpreter, outside the repository, with no PYTHONPATH: a finder
# first on sys.meta_path refuses the package, and the child proves that it does
# before loading every export with TensorFlow alone.
CHILD = textwrap.dedent("""
    import json
    import sys

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "playing_distraction":
                raise ImportError("playing_distraction is refused in this process")
            return None

    sys.meta_path.insert(0, Refuse())
    try:
        import playing_distraction  # noqa: F401
    except ImportError:
        pass
    else:
        sys.exit("playing_distraction could be imported")

    import numpy as np
    import tensorflow as tf

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = getattr(getattr(tf, "lite", None), "Interpreter", None)

    jobs = json.loads(sys.argv[1])
    for job in jobs:
        images = np.load(job["images"])
        loaded = tf.saved_model.load(job["folder"])
        signature = loaded.signatures["serving_default"]
        (input_name,) = signature.structured_input_signature[1]
        outputs = signature(**{input_name: tf.constant(images)})
        result = {"serve": loaded.serve(tf.constant(images)).numpy(),
                  "input_name": np.array(input_name),
                  "output_names": np.array(sorted(outputs))}
        result.update({"signature_" + name: value.numpy() for name, value in outputs.items()})
        if job["tflite"] and Interpreter is not None:
            interpreter = Interpreter(model_path=job["tflite"])
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, images.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(index, images)
            interpreter.invoke()
            result["tflite"] = interpreter.get_tensor(
                interpreter.get_output_details()[0]["index"])
        np.savez(job["result"], **result)
    assert not [name for name in sys.modules if name.startswith("playing_distraction")]
    print("served without playing_distraction")
""")


def fashion_parts():
    """A tiny Fashion-MNIST: 6 train and 2 test images per class, class-dependent
    brightness so that one epoch learns something."""
    rng = np.random.default_rng(0)

    return fashion_part(rng, 6), fashion_part(rng, 2)


def train(data, out, *argv):
    assert train_main(["--dataset", "fashion-mnist", "--data-dir", str(data), "--epochs", "1",
                       "--batch-size", "16", "--verbose", "0", "--weights", "none",
                       "--jit-compile", "off", "--out-dir", str(out), *argv]) == 0


def evaluate_argv(baseline, methods, out_dir, *flags):
    argv = ["--baseline", *map(str, baseline), "--out-dir", str(out_dir),
            "--figure-images", "0", "--no-faithfulness", *flags]
    for runs in methods:
        argv += ["--method", *map(str, runs)]
    return argv


def serve_without_the_package(tmp_path, folders, images):
    """Runs CHILD on every export folder; {folder: its results (np.load of .npz)}."""
    np.save(tmp_path / "images.npy", images)
    jobs = [{"folder": str(folder), "images": str(tmp_path / "images.npy"),
             "result": str(tmp_path / f"{folder.name}.npz"),
             "tflite": str(folder / export.TFLITE_FILE)
             if (folder / export.TFLITE_FILE).is_file() else None}
            for folder in folders]
    (tmp_path / "child.py").write_text(CHILD)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    child = subprocess.run([sys.executable, str(tmp_path / "child.py"), json.dumps(jobs)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    assert "served without playing_distraction" in child.stdout
    return {folder: dict(np.load(job["result"])) for folder, job in zip(folders, jobs)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A baseline run and a saliency (RGB + scratch SAL) run, evaluated with --export
    (and --export-tflite where the converter exists), then served by CHILD. Returns
    (runs, export folders, stdout of evaluate.py, the test images, CHILD's results)."""
    root = tmp_path_factory.mktemp("export")
    data = root / "fmnist"
    write_fashion_mnist(data, *fashion_parts())
    train(data, root / "runs", "--occlusion", "none")
    train(data, root / "runs", "--method", "saliency")
    runs = [load_run(root / "runs" / f"fashion-mnist-{tag}-small_cnn-seed0")
            for tag in ("none", "saliency-scratch")]
    out = root / "reports"
    flags = ["--export-tflite"] if HAS_CONVERTER else ["--export"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = evaluate_main(evaluate_argv([runs[0].path], [[runs[1].path]], out, *flags))
    assert code == 0
    folders = [out / "export" / run.path.name for run in runs]
    images = np.random.default_rng(1).random((5, 32, 32, 3), dtype=np.float32)
    images[0] = evaluation.load_test_images(runs[0]).images[0] / 255.0
    (root / "child").mkdir()
    served = serve_without_the_package(root / "child", folders, images)
    return runs, folders, stdout.getvalue(), images, served


def keras_logits(run, images):
    model = keras.models.load_model(run.path / "model.keras")
    return keras.ops.convert_to_numpy(model(images, training=False))


def test_every_export_serves_the_saved_models_logits_without_the_package(exported):
    runs, folders, _, images, served = exported
    for run, folder in zip(runs, folders):
        expected = keras_logits(run, images)
        assert expected.shape == (len(images), len(run.config["class_names"]))
        result = served[folder]
        assert np.abs(result["serve"] - expected).max() < 1e-5
        # serving_default, what TF Serving and saved_model_cli call, is the same graph.
        manifest = json.loads((folder / export.MANIFEST).read_text())
        assert str(result["input_name"]) == manifest["input"]["name"]
        assert list(result["output_names"]) == [manifest["output"]["name"]]
        np.testing.assert_array_equal(result["signature_" + manifest["output"]["name"]],
                                      result["serve"])
    # The saliency classifier holds the package's layers; its export does not need them.
    saliency = keras.models.load_model(runs[1].path / "model.keras")
    assert {"SaliencyBranch", "SaliencyModulation"} <= {
        type(layer).__name__ for layer in saliency.layers}


def test_export_json_says_what_to_send_and_what_comes_back(exported):
    runs, folders, _, _, _ = exported
    for run, folder in zip(runs, folders):
        manifest = json.loads((folder / export.MANIFEST).read_text())
        size = run.config["image_size"]
        assert manifest["class_names"] == run.config["class_names"]
        assert manifest["image_size"] == [size, size]
        assert manifest["input"]["shape"] == [None, size, size, 3]
        assert manifest["input"]["range"] == [0.0, 1.0]
        assert manifest["input"]["dtype"] == "float32"
        assert manifest["output"]["kind"] == "logits"
        assert manifest["output"]["shape"] == [None, len(run.config["class_names"])]
        assert (manifest["tag"], manifest["signature"], manifest["function"]) == (
            "serve", "serving_default", "serve")
        assert manifest["run"] == str(run.path.resolve()) and manifest["seed"] == run.seed
        # One folder is the SavedModel, with the manifest among its files, and nothing
        # temporary is left beside it.
        assert (folder / "saved_model.pb").is_file() and (folder / "variables").is_dir()
    assert sorted(path.name for path in folders[0].parent.iterdir()) == sorted(
        folder.name for folder in folders)
    assert [json.loads((folder / export.MANIFEST).read_text())["method"]
            for folder in folders] == ["baseline", "RGB + scratch SAL"]


def test_evaluate_prints_one_line_per_export_and_lists_them(exported):
    _, folders, stdout, _, _ = exported
    lines = stdout.splitlines()
    assert [line for line in lines if line.startswith("export ")] == [
        f"export {number} of 2: {folder}" for number, folder in enumerate(folders, start=1)]
    assert lines[-1].startswith("tables written to ")
    assert all(f", export/{folder.name}/" in lines[-1] for folder in folders)


def test_the_tflite_model_gives_the_logits(exported):
    if not HAS_CONVERTER:
        pytest.skip(f"TensorFlow {tf.__version__} has no tf.lite.TFLiteConverter")
    runs, folders, _, images, served = exported
    for run, folder in zip(runs, folders):
        assert json.loads((folder / export.MANIFEST).read_text())["tflite"] == "model.tflite"
        if "tflite" not in served[folder]:
            pytest.skip("no TFLite interpreter (ai_edge_litert or tf.lite) to run it with")
        assert np.abs(served[folder]["tflite"] - keras_logits(run, images)).max() < 1e-4


# ------------------------------------------------------------------ refusals


def one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_an_earlier_export_is_refused_unless_overwrite_export(exported, tmp_path, capsys):
    runs, _, _, _, _ = exported
    out = tmp_path / "reports"
    argv = evaluate_argv([runs[0].path], [], out, "--export")
    assert evaluate_main(argv) == 0
    folder = out / "export" / runs[0].path.name
    (folder / "marker").write_text("the earlier export")
    capsys.readouterr()
    # Refused before any model is loaded: nothing printed, the export untouched.
    assert evaluate_main(argv) == 1
    err = one_line(capsys)
    assert str(folder) in err and "--overwrite-export" in err
    assert (folder / "marker").is_file()
    assert capsys.readouterr().out == ""
    assert evaluate_main([*argv, "--overwrite-export"]) == 0
    assert not (folder / "marker").exists() and (folder / export.MANIFEST).is_file()
    assert [path.name for path in folder.parent.iterdir()] == [folder.name]
    # --overwrite-export replaces exports only.
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "notes.txt").write_text("not an export")
    with pytest.raises(UserError, match="not an export folder"):
        export.check_exports([Method("baseline", runs[:1])], out, overwrite=True)


@pytest.mark.parametrize("flag", ["--export", "--export-tflite"])
def test_export_with_no_models_is_refused_in_one_line(exported, tmp_path, capsys, flag):
    runs, _, _, _, _ = exported
    out = tmp_path / "reports"
    assert evaluate_main(["--baseline", str(runs[0].path), "--out-dir", str(out),
                          "--no-models", flag]) == 2
    err = one_line(capsys)
    assert flag in err and "--no-models" in err
    assert not out.exists()


def test_overwrite_export_without_export_is_refused(exported, tmp_path, capsys):
    runs, _, _, _, _ = exported
    assert evaluate_main(["--baseline", str(runs[0].path), "--out-dir", str(tmp_path / "r"),
                          "--overwrite-export"]) == 2
    assert "--overwrite-export applies to --export only" in one_line(capsys)


def test_two_runs_of_one_folder_name_are_refused_naming_both(exported, tmp_path, capsys):
    runs, _, _, _, _ = exported
    copy = tmp_path / "elsewhere" / runs[0].path.name
    shutil.copytree(runs[0].path, copy)
    out = tmp_path / "reports"
    assert evaluate_main(evaluate_argv([runs[0].path], [[copy]], out, "--export")) == 1
    err = one_line(capsys)
    assert str(runs[0].path) in err and str(copy) in err
    assert not (out / "export").exists()


def test_a_folder_that_cannot_be_written_is_one_line_and_leaves_nothing(exported, tmp_path):
    runs, _, _, _, _ = exported
    (tmp_path / "export").write_text("a file where the export folder goes")
    with pytest.raises(UserError) as error:
        export.export_runs([Method("baseline", runs[:1])], tmp_path)
    message = str(error.value)
    assert "\n" not in message and str(runs[0].path) in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]


@pytest.mark.parametrize("writer", ["tensorflow", "python"])
def test_a_full_disk_is_one_line_and_leaves_no_partial_export(exported, tmp_path,
                                                              monkeypatch, writer):
    runs, _, _, _, _ = exported

    def full(model, path, *args, **kwargs):
        # What a full disk raises midway: TensorFlow's SaveV2 (as seen on a full
        # tmpfs), or Python's own file writes.
        Path(path, "variables").mkdir()
        if writer == "python":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise tf.errors.ResourceExhaustedError(
            None, None, f"{path}/variables/part-0; No space left on device [Op:SaveV2]")

    monkeypatch.setattr(keras.Model, "export", full)
    with pytest.raises(UserError) as error:
        export.export_runs([Method("baseline", runs[:1])], tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.startswith("no space left on the disk to export")
    assert str(runs[0].path) in message
    assert list((tmp_path / "export").iterdir()) == []


def test_a_failed_tflite_conversion_names_the_run(exported, tmp_path, monkeypatch):
    if not HAS_CONVERTER:
        pytest.skip(f"TensorFlow {tf.__version__} has no tf.lite.TFLiteConverter")
    runs, _, _, _, _ = exported

    class Failing:  # what the converter of a model with an op TFLite lacks does
        def convert(self):
            raise RuntimeError("could not legalize op: SomeOp\nmore detail")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model",
                        staticmethod(lambda path: Failing()))
    with pytest.raises(UserError) as error:
        export.export_runs([Method("baseline", runs[:1])], tmp_path, tflite=True)
    assert str(error.value) == (f"cannot convert {runs[0].path} to TFLite: could not "
                                "legalize op: SomeOp")
    assert list((tmp_path / "export").iterdir()) == []
