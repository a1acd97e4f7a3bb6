"""Run folders in a hostile world (issue 13): damaged files, lost history, full disks,
a second process, a diverging run. Each ends in one line and a non-zero exit, or
resumes to the uninterrupted result; nothing leaves a partial file behind."""

import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from test_methods import train_args
from test_resume import history_rows, interrupt_after

from playing_distraction import checkpoints, storage
from playing_distraction.cli import train_main

ARGS = ("--epochs", "2", "--patience", "5")


@pytest.fixture
def whole(fashion_dir, tmp_path):
    assert train_main(train_args(fashion_dir, tmp_path / "whole", *ARGS)) == 0
    return next((tmp_path / "whole").iterdir())


@pytest.fixture
def interrupted(fashion_dir, tmp_path, monkeypatch):
    """A run stopped like Ctrl-C after its first epoch's checkpoint."""
    with monkeypatch.context() as patch:
        interrupt_after(0, patch)
        assert train_main(train_args(fashion_dir, tmp_path / "cut", *ARGS)) == 130
    return next((tmp_path / "cut").iterdir())


def resume(fashion_dir, run, *extra):
    return train_main(train_args(fashion_dir, run.parent, *ARGS, "--resume", *extra))


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train.py: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def leftovers(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob(f"{storage.PARTIAL}*"))


# ------------------------------------------------------------------ damaged files


@pytest.mark.parametrize("damage", ["truncated", "garbled", "empty"])
def test_a_damaged_checkpoint_is_one_line_on_resume(fashion_dir, interrupted, capsys, damage):
    path = interrupted / checkpoints.CHECKPOINT
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2],
                      "garbled": bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8)),
                      "empty": b""}[damage])
    capsys.readouterr()
    assert resume(fashion_dir, interrupted) == 1
    line = one_error_line(capsys)
    assert f"cannot resume from {path}: the file is damaged" in line
    assert "delete it to start the run again from its first epoch with --resume" in line
    path.unlink()  # as the message says: the run starts again, and finishes
    assert resume(fashion_dir, interrupted) == 0
    assert json.loads((interrupted / "metrics.json").read_text())["epochs_run"] == 2


@pytest.mark.parametrize("content", ["[1, 2]", "", '{"seed": NaN}', "{not json"])
def test_a_damaged_config_is_one_line_and_overwrite_replaces_it(fashion_dir, interrupted,
                                                                capsys, content):
    (interrupted / "config.json").write_text(content)
    capsys.readouterr()
    assert resume(fashion_dir, interrupted) == 1
    line = one_error_line(capsys)
    assert f"{interrupted / 'config.json'} is damaged" in line
    assert f"--overwrite --run-name {interrupted.name}" in line
    assert train_main(train_args(fashion_dir, interrupted.parent, *ARGS, "--overwrite",
                                 "--run-name", interrupted.name)) == 0
    assert (interrupted / "metrics.json").is_file()


def test_a_lost_history_is_rewritten_from_the_checkpoint(fashion_dir, interrupted, whole,
                                                         capsys):
    (interrupted / "history.csv").unlink()
    assert resume(fashion_dir, interrupted, "--verbose", "2") == 0
    assert "history.csv was missing; rewritten from the checkpoint" in capsys.readouterr().out
    metrics = json.loads((interrupted / "metrics.json").read_text())
    assert (metrics["epochs_run"], metrics["best_epoch"]) == (2, json.loads(
        (whole / "metrics.json").read_text())["best_epoch"])
    assert history_rows(interrupted) == history_rows(whole)
    assert (interrupted / "predictions.csv").read_text() == (whole / "predictions.csv").read_text()


def test_a_history_that_disagrees_with_the_checkpoint_is_refused(fashion_dir, interrupted,
                                                                 capsys):
    path = interrupted / "history.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1].replace(lines[1].split(",")[1], "0.123", 1))
    capsys.readouterr()
    assert resume(fashion_dir, interrupted) == 1
    assert "does not match the 1 epochs its checkpoint recorded" in one_error_line(capsys)


# ------------------------------------------------------------------ full disks


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["checkpoint", "model", "predictions"])
def test_a_full_disk_is_one_line_leaves_no_partial_file_and_resumes(
        fashion_dir, tmp_path, whole, monkeypatch, capsys, where):
    """The disk fills while the second epoch's checkpoint, the model or the
    predictions are written; once there is space again, --resume finishes the run
    as if nothing had happened."""
    out = tmp_path / "full"
    original_savez, original_writer = np.savez, csv.writer
    calls = []

    def savez(handle, **arrays):  # the second checkpoint: cut short by a full disk
        calls.append(1)
        if len(calls) == 2:
            handle.write(b"PK partial")
            enospc()
        return original_savez(handle, **arrays)

    def save(model, path, *args, **kwargs):
        Path(path).write_bytes(b"PK partial")
        enospc()

    def writer(handle, *args, **kwargs):  # history.csv goes through, predictions.csv not
        if "predictions" in getattr(handle, "name", ""):
            handle.write("item,label")
            enospc()
        return original_writer(handle, *args, **kwargs)

    with monkeypatch.context() as patch:
        if where == "checkpoint":
            patch.setattr(np, "savez", savez)
        elif where == "model":
            patch.setattr(keras.Model, "save", save)
        else:
            patch.setattr(csv, "writer", writer)
        assert train_main(train_args(fashion_dir, out, *ARGS)) == 1
    run = out / whole.name
    line = one_error_line(capsys)
    name = {"checkpoint": "checkpoint.npz", "model": "model.keras",
            "predictions": "predictions.csv"}[where]
    assert f"no space left on the disk to write {run / name}" in line
    assert "MB free" in line and "run the same command with --resume" in line
    assert leftovers(out) == []
    assert not (run / "metrics.json").exists()
    assert json.loads((run / "config.json").read_text())["seed"] == 0
    assert resume(fashion_dir, run) == 0
    assert (run / "predictions.csv").read_text() == (whole / "predictions.csv").read_text()
    assert leftovers(out) == [] and not (run / storage.LOCK).exists()


def test_a_run_folder_cut_short_before_its_config_does_not_block_resume_or_overwrite(
        fashion_dir, tmp_path, monkeypatch, capsys):
    """The disk is full when config.json is written: the folder stays empty, and both
    --resume and --overwrite take it."""
    out = tmp_path / "out"

    def full(path, text):
        with storage.atomic_path(path, len(text)) as temporary:
            temporary.write_text(text[:5])
            enospc()

    with monkeypatch.context() as patch:
        patch.setattr(storage, "write_text", full)
        assert train_main(train_args(fashion_dir, out, *ARGS, "--run-name", "run")) == 1
    assert "no space left on the disk" in one_error_line(capsys)
    assert sorted(os.listdir(out / "run")) == []
    assert train_main(train_args(fashion_dir, out, *ARGS, "--run-name", "run", "--resume")) == 0
    assert train_main(train_args(fashion_dir, out, *ARGS, "--run-name", "run",
                                 "--overwrite")) == 0


def test_a_real_full_disk(fashion_dir, tmp_path, capsys):
    """A 1 MB tmpfs as --out-dir (root only): the first checkpoint does not fit."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        assert train_main(train_args(fashion_dir, mount, *ARGS)) == 1
        line = one_error_line(capsys)
        assert "no space left on the disk to write" in line and "checkpoint.npz" in line
        assert leftovers(mount) == []
        run = next(mount.iterdir())
        assert json.loads((run / "config.json").read_text())["epochs"] == 2
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# ------------------------------------------------------------------ a second process


def test_a_run_folder_is_locked_while_a_process_trains_in_it(fashion_dir, interrupted, capsys):
    lock = interrupted / storage.LOCK
    lock.write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    capsys.readouterr()
    assert resume(fashion_dir, interrupted) == 1
    assert f"is being trained by process {os.getpid()} on this host" in one_error_line(capsys)
    assert lock.exists()  # not taken from a live process


def test_a_stale_lock_is_taken_over_with_a_note(fashion_dir, interrupted, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (interrupted / storage.LOCK).write_text(
        json.dumps({"pid": gone.pid, "host": os.uname().nodename}))
    assert resume(fashion_dir, interrupted, "--verbose", "2") == 0
    assert f"taking over the lock of process {gone.pid}, which no longer runs" in (
        capsys.readouterr().out)
    assert not (interrupted / storage.LOCK).exists()


def test_a_lock_of_another_host_is_not_taken(fashion_dir, interrupted, capsys):
    (interrupted / storage.LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    capsys.readouterr()
    assert resume(fashion_dir, interrupted) == 1
    assert "is locked by process 1 on host elsewhere" in one_error_line(capsys)


# ------------------------------------------------------------------ divergence


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_checkpoint(
        fashion_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert train_main(train_args(fashion_dir, out, "--epochs", "3", "--learning-rate",
                                 "1e30")) == 1
    line = one_error_line(capsys)
    assert "training diverged in epoch 1" in line and "try a lower --learning-rate" in line
    run = next(out.iterdir())
    assert not (run / "metrics.json").exists()
    assert (run / "history.csv").read_text().count("\n") <= 1  # no epoch row
    # Every JSON file a run wrote is strict JSON (no NaN).
    for path in run.glob("*.json"):
        json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(name))
