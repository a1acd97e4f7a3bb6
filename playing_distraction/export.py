"""Serving export (``evaluate.py --export``): every run's saved classifier as a
TensorFlow SavedModel that TF Serving, ``saved_model_cli`` and ``tf.saved_model.load``
use without this package, with ``export.json`` saying what to send and what comes back.

What is exported is the plain classifier users get (README "Use a trained model"):
float32 RGB images (batch, H, W, 3) in [0, 1] of the run's image size -> logits, the
backbone's preprocessing inside. Keras 3's ``model.export`` traces the model into
TensorFlow ops, so a saliency run's classifier (PAPERS.md §2), which holds this
package's ``SaliencyBranch`` and ``SaliencyModulation``, loads as a graph of standard
ops: the package is needed to export, not to serve (tests/test_export.py loads every
export in a process that cannot import it). The SavedModel has the tag ``serve`` and
two signatures of one graph: ``serving_default`` (what TF Serving and the TFLite
converter use) and ``serve`` (also ``tf.saved_model.load(folder).serve``).

Layout: ``<out-dir>/export/<run folder name>/`` is the SavedModel (``saved_model.pb``,
``variables/``, ``assets/``) with ``export.json`` and, with ``--export-tflite``,
``model.tflite`` (converted from it) among its files, so one folder is one
deployable version (TF Serving reads ``saved_model.pb`` and ``variables/`` and
ignores the rest).

Every export of one call is written to a temporary folder beside its destination,
and all are renamed into place once all are complete: an interruption, a full disk
or a failed conversion leaves no export of the call behind (nor a temporary folder),
so the same command can be run again. An earlier export is never replaced silently:
a model that is being served may be in it. ``overwrite`` replaces it (the old folder
is moved aside, the new one renamed in, the old one removed), but only a folder
holding ``export.json``, so no other folder is deleted by mistake.

The checks (``check_exports``) do not import TensorFlow, so evaluate.py refuses a
clash before any slow work; the writing functions import it.
"""

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError
from .storage import megabytes

EXPORT_FOLDER = "export"
MANIFEST = "export.json"
TFLITE_FILE = "model.tflite"
TAG = "serve"
SIGNATURE = "serving_default"
ENDPOINT = "serve"
INPUT_NAME = "image"
PARTIAL = ".partial-"
REPLACED = ".replaced-"

# How train.py made its inputs (pipeline.fit_image, pipeline.to_unit_range): what a
# serving user must do to an image before sending it.
PREPARATION = ("RGB (grey images repeated to 3 channels), resized bilinearly (antialiased "
               "when shrinking) to the square image size without keeping the aspect ratio, "
               "then uint8 values divided by 255")


def export_path(out_dir, run):
    """Where ``run`` is exported: ``<out_dir>/export/<run folder name>``."""
    return Path(out_dir) / EXPORT_FOLDER / Path(run.path).resolve().name


def check_exports(methods, out_dir, overwrite=False):
    """[(method, run, destination)] of every run of ``methods``, checked before
    anything is loaded: two runs of one folder name from different parents would
    share a destination, and an earlier export there is refused unless
    ``overwrite`` (and with it, a destination that is not an export)."""
    planned, by_name = [], {}
    for method in methods:
        for run in method.runs:
            destination = export_path(out_dir, run)
            first = by_name.setdefault(destination.name, run)
            if first is not run:
                raise UserError(f"{first.path} and {run.path} would both be exported to "
                                f"{destination}: their folders have one name; give one of "
                                "them, or copy it to a folder of another name")
            _check_destination(destination, overwrite)
            planned.append((method, run, destination))
    return planned


def _check_destination(destination, overwrite):
    if not (destination.exists() or destination.is_symlink()):
        return
    if not overwrite:
        raise UserError(f"{destination} exists (an earlier export); give --overwrite-export "
                        "to replace it, or another --out-dir")
    if destination.is_symlink() or not (destination / MANIFEST).is_file():
        raise UserError(f"{destination} is not an export folder (no {MANIFEST} in it); "
                        "--overwrite-export replaces exports only: move it away first")


def export_runs(methods, out_dir, tflite=False, overwrite=False, log=None):
    """Exports every run of ``methods``: its classifier (``evaluation.load_model``) as a
    SavedModel with ``export.json`` (and ``model.tflite``) in ``export_path``; returns
    the folders written, in run order. ``log`` gets "export i of N: <folder>" before
    each. All or nothing: every export is made in its temporary folder first, and
    renamed into place once all are made, so a failure (one ``UserError`` line naming
    the run: a damaged model file, a full disk, a folder that cannot be written, a
    failed TFLite conversion) leaves no export of this call behind, and the same
    command can simply be run again."""
    planned = check_exports(methods, out_dir, overwrite)
    if tflite:
        _tflite_converter()  # a build without the converter fails before the first export
    staged = []
    try:
        for number, (method, run, destination) in enumerate(planned, start=1):
            if log:
                log(f"export {number} of {len(planned)}: {destination}")
            with _writing(run, destination):
                temporary = _temporary_folder(destination)
                staged.append(temporary)
                _write_export(run, temporary, method.name, tflite)
        for temporary, (_, run, destination) in zip(staged, planned):
            with _writing(run, destination):
                _publish(temporary, destination, overwrite)
    finally:
        for temporary in staged:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)
    return [destination for _, _, destination in planned]


@contextlib.contextmanager
def _writing(run, destination):
    """An OSError, or TensorFlow's error for its own file writes, becomes one
    ``UserError`` line naming the run and the destination."""
    import tensorflow as tf

    try:
        yield
    except OSError as error:
        raise UserError(_write_error(run, destination, error.strerror or str(error),
                                     error.errno in (errno.ENOSPC, errno.EDQUOT))) from None
    except tf.errors.OpError as error:
        raise UserError(_write_error(run, destination, error.message.splitlines()[0],
                                     isinstance(error, tf.errors.ResourceExhaustedError)
                                     or "No space left" in error.message)) from None


def _temporary_folder(destination):
    """A new folder ``.partial-<name>-XXXX`` beside ``destination``, with the mode of
    any new folder (mkdtemp makes it private)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f"{PARTIAL}{destination.name}-",
                                      dir=destination.parent))
    umask = os.umask(0)
    os.umask(umask)
    temporary.chmod(0o777 & ~umask)
    return temporary


def _write_export(run, folder, method, tflite):
    """The run's SavedModel, ``export.json`` and optionally ``model.tflite`` in
    ``folder``."""
    import tensorflow as tf

    from .evaluation import load_model

    model = load_model(run)
    class_names = run.config["class_names"]
    if model.output_shape[-1] != len(class_names):
        raise UserError(f"{run.path / 'model.keras'} gives {model.output_shape[-1]} logits, "
                        f"but its config.json names {len(class_names)} classes")
    height, width = model.input_shape[1:3]
    # The signature is spelled out, so that it is float32 images of the model's size
    # whatever dtype policy the model was trained under.
    model.export(str(folder), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32,
                                                name=INPUT_NAME)])
    if tflite:
        (folder / TFLITE_FILE).write_bytes(_to_tflite(run, folder))
    manifest = _manifest(run, method, folder, (height, width), tflite)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _write_error(run, destination, reason, disk_full):
    if disk_full:
        try:
            free = f"{megabytes(shutil.disk_usage(destination.parent).free)} free"
        except OSError:
            free = "free space unknown"
        return (f"no space left on the disk to export {run.path} to {destination} ({free}); "
                "free some space or give another --out-dir, then run the same command again")
    return f"cannot export {run.path} to {destination}: {reason}"


def _publish(temporary, destination, overwrite):
    """Renames the complete export ``temporary`` to ``destination``. With ``overwrite``,
    an earlier export is moved aside first and removed once the new one is in place
    (put back if the rename fails)."""
    _check_destination(destination, overwrite)  # made since the check before the work?
    if not destination.exists():
        temporary.rename(destination)
        return
    aside = Path(tempfile.mkdtemp(prefix=f"{REPLACED}{destination.name}-",
                                  dir=destination.parent))
    old = aside / destination.name
    destination.rename(old)
    try:
        temporary.rename(destination)
    except BaseException:
        old.rename(destination)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _signature_names(saved_model_dir):
    """(input names, output names) of the written ``serving_default`` signature, read
    from ``saved_model.pb`` (Keras chooses the output's name)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    graphs = [graph for graph in proto.meta_graphs if TAG in graph.meta_info_def.tags]
    signature = graphs[0].signature_def[SIGNATURE]
    return sorted(signature.inputs), sorted(signature.outputs)


def _manifest(run, method, saved_model_dir, size, tflite):
    """What a serving user needs: where the model came from, the signature, what to
    send (shape, type, range, how to prepare an image) and what comes back."""
    inputs, outputs = _signature_names(saved_model_dir)
    class_names = list(run.config["class_names"])
    height, width = size
    return {
        "run": str(Path(run.path).resolve()),
        "method": method,
        "seed": run.seed,
        "format": "tf_saved_model",
        "tag": TAG,
        "signature": SIGNATURE,
        "function": ENDPOINT,
        "image_size": [height, width],
        "input": {"name": inputs[0], "dtype": "float32", "shape": [None, height, width, 3],
                  "range": [0.0, 1.0], "channels": "RGB", "preparation": PREPARATION},
        "output": {"name": outputs[0], "dtype": "float32",
                   "shape": [None, len(class_names)], "kind": "logits",
                   "probabilities": "softmax over the last axis"},
        "class_names": class_names,
        "tflite": TFLITE_FILE if tflite else None,
    }


def _tflite_converter():
    import tensorflow as tf

    converter = getattr(getattr(tf, "lite", None), "TFLiteConverter", None)
    if converter is None:
        raise UserError(f"this TensorFlow {tf.__version__} has no TFLite converter "
                        "(tf.lite.TFLiteConverter): drop --export-tflite")
    return converter


def _to_tflite(run, saved_model_dir):
    """The TFLite flatbuffer of the SavedModel's ``serving_default`` signature."""
    converter = _tflite_converter().from_saved_model(str(saved_model_dir))
    try:
        return converter.convert()
    # The converter's own error class is private (convert_phase.ConverterError, an
    # Exception) and MLIR failures also surface as ValueError or RuntimeError.
    except Exception as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise UserError(f"cannot convert {run.path} to TFLite: "
                        f"{lines[0] if lines else type(error).__name__}") from None
