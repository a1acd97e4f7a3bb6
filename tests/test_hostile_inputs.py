"""Runs that survive a hostile world (issue 13): a disk that fills under --cache-dir,
Ctrl-C at any moment, numbers that are not numbers. Each ends as one line on stderr
and a non-zero exit: no traceback, no "Bus error", no partial file left behind, no
model trained on a NaN learning rate."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from playing_distraction import pipeline
from playing_distraction.errors import UserError
from playing_distraction.layouts import Part

ROOT = Path(__file__).resolve().parent.parent
TRAIN, EVALUATE = str(ROOT / "train.py"), str(ROOT / "evaluate.py")
SIZE = 128  # 48 KiB per decoded image: 24 images overflow a 1 MiB disk
RESUME_HINT = ("train.py: error: interrupted; run the same command with --resume to continue "
               "from the last finished epoch")


def environment(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **extra)


def own_lines(stderr, prog):
    """The lines a script itself wrote to stderr (TensorFlow logs its start-up there)."""
    assert "Traceback" not in stderr and "Bus error" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith(f"{prog}:")]


def write_images(folder, count=24, classes=3):
    """``folder``/train/<class>/*.png and test/<class>/*.png, 40 px, a colour per class."""
    rng = np.random.default_rng(0)
    paths = []
    for split, per_class in (("train", count // classes), ("test", 2)):
        for label in range(classes):
            directory = folder / split / f"c{label}"
            directory.mkdir(parents=True)
            for index in range(per_class):
                colour = np.eye(3)[label] * 200 + rng.integers(0, 50, (40, 40, 3))
                path = directory / f"{index}.png"
                Image.fromarray(colour.astype(np.uint8)).save(path)
                if split == "train":
                    paths.append(str(path))
    return paths


def file_part(paths):
    return Part(None, np.arange(len(paths)) % 3, np.array(paths))


def mount_tiny_disk(mount_point, size="1m"):
    mount_point.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs as a full disk needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                           str(mount_point)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "tiny"
    mount_tiny_disk(mount_point)
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


# ------------------------------------------------------------------ a full disk


def test_a_cache_larger_than_the_free_space_is_refused_in_one_line(tmp_path, tiny_disk):
    write_images(tmp_path / "images")
    done = subprocess.run(
        [sys.executable, TRAIN, "--dataset", "folder", "--data-dir", "images", "--backbone",
         "small_cnn", "--weights", "none", "--image-size", str(SIZE), "--epochs", "1",
         "--cache-dir", str(tiny_disk), "--out-dir", "out"],
        capture_output=True, text=True, cwd=tmp_path, env=environment(), timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    lines = own_lines(done.stderr, "train.py")
    assert len(lines) == 1
    assert lines[0].startswith(f"train.py: error: not enough space for the image cache in "
                               f"{tiny_disk}: 1.2 MB needed, 1.0 MB free"), lines[0]
    assert "--cache-dir" in lines[0]
    assert list(tiny_disk.iterdir()) == []  # nothing left that keeps the disk full
    assert not (tmp_path / "out").exists()


def test_a_disk_that_fills_while_caching_leaves_no_partial_file(tmp_path, tiny_disk):
    # The free-space check is fooled and the blocks are not reserved (another writer
    # took the space meanwhile, say): the writes themselves meet the full disk. The
    # memory-mapped cache of old died of SIGBUS here; a subprocess keeps that away from
    # pytest.
    paths = write_images(tmp_path / "images")
    script = textwrap.dedent(f"""
        import os, shutil, sys, types
        import numpy as np
        from playing_distraction import pipeline
        from playing_distraction.errors import UserError
        from playing_distraction.layouts import Part

        shutil.disk_usage = lambda path: types.SimpleNamespace(total=2**40, used=0, free=2**40)
        os.posix_fallocate = lambda *args: None
        part = Part(None, np.zeros({len(paths)}, np.int64), np.array({paths!r}))
        try:
            pipeline.prepare(part, {SIZE}, cache_dir={str(tiny_disk)!r})
        except UserError as error:
            sys.exit(f"error: {{error}}")
        print("cached")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=environment(), timeout=300)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot write the image cache in {tiny_disk}: No space left on device; "
        "use another --cache-dir, or leave it out to keep the images in memory")
    assert list(tiny_disk.iterdir()) == []


def test_too_little_free_space_is_refused_before_decoding(tmp_path, monkeypatch):
    # Runs everywhere: the full disk is simulated.
    part, cache = file_part(write_images(tmp_path / "images")), tmp_path / "cache"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(
        total=10**9, used=10**9 - 10**6, free=10**6))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoding started before the free space was checked")

    monkeypatch.setattr(pipeline, "source_dataset", no_decoding)
    message = (f"not enough space for the image cache in {cache}: 1.2 MB needed, 1.0 MB free; "
               "use another --cache-dir, or leave it out to keep the images in memory")
    with pytest.raises(UserError) as caught:
        pipeline.prepare(part, SIZE, cache_dir=cache)
    assert str(caught.value) == message
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("failing", ["posix_fallocate", "fsync"])
def test_no_space_while_writing_the_cache_removes_the_partial_file(tmp_path, monkeypatch,
                                                                    failing):
    # Runs everywhere: ENOSPC is simulated when the blocks are reserved, and at the end.
    part, cache = file_part(write_images(tmp_path / "images", count=6)), tmp_path / "cache"

    def no_space(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, failing, no_space)
    with pytest.raises(UserError, match=f"cannot write the image cache in {cache}: "
                                        "No space left on device; use another --cache-dir"):
        pipeline.prepare(part, SIZE, cache_dir=cache)
    assert list(cache.iterdir()) == []
    monkeypatch.undo()
    # The next run builds the cache, and the one after reads it.
    first = pipeline.prepare(part, SIZE, cache_dir=cache)
    assert sorted(path.suffix for path in cache.iterdir()) == [".json", ".npy"]
    np.testing.assert_array_equal(pipeline.prepare(part, SIZE, cache_dir=cache).images,
                                  first.images)


def test_partial_files_of_dead_runs_go_and_those_of_live_runs_stay(tmp_path):
    # A run killed while it filled the cache (SIGKILL, a power cut) left its partial
    # file, which may be what fills the disk; another run filling the same cache at
    # this moment holds its own partial file open, locked.
    fcntl = pytest.importorskip("fcntl", reason="a partial file's lock is a POSIX flock")
    part, cache = file_part(write_images(tmp_path / "images", count=6)), tmp_path / "cache"
    key = pipeline._cache_key(part, SIZE)
    cache.mkdir()
    abandoned = cache / f"{key}.4242-0badcafe.partial.npy"
    abandoned.write_bytes(bytes(1000))
    live = cache / f"{key}.4343-c0ffee00.partial.npy"
    live.write_bytes(bytes(1000))
    with open(live, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        prepared = pipeline.prepare(part, SIZE, cache_dir=cache)
        assert sorted(path.name for path in cache.iterdir()) == [
            f"{key}.4343-c0ffee00.partial.npy", f"{key}.json", f"{key}.npy"]
    assert live.read_bytes() == bytes(1000)
    np.testing.assert_array_equal(pipeline.prepare(part, SIZE, cache_dir=cache).images,
                                  prepared.images)


def test_a_cache_file_cut_short_is_rebuilt(tmp_path):
    # A file under the final name that lost its end (a copy cut short, a crash before
    # the data reached the disk) is not read as valid.
    part, cache = file_part(write_images(tmp_path / "images", count=6)), tmp_path / "cache"
    expected = pipeline.prepare(part, SIZE, cache_dir=cache).images.copy()
    (npy,) = cache.glob("*.npy")
    data = npy.read_bytes()
    npy.write_bytes(data[: len(data) // 2])
    np.testing.assert_array_equal(pipeline.prepare(part, SIZE, cache_dir=cache).images, expected)
    assert npy.stat().st_size == len(data)
    # A file of other bytes (float32 where uint8 belongs) is rebuilt, too.
    np.save(npy, expected.astype(np.float32))
    rebuilt = pipeline.prepare(part, SIZE, cache_dir=cache).images
    assert rebuilt.dtype == np.uint8
    np.testing.assert_array_equal(rebuilt, expected)


# ------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_while_decoding_into_the_cache_leaves_no_partial_file(tmp_path, monkeypatch):
    part, cache = file_part(write_images(tmp_path / "images", count=6)), tmp_path / "cache"

    class Interrupted:
        """The decoded stream, stopped by Ctrl-C after its first batch."""

        def batch(self, size):
            return self

        def prefetch(self, size):
            return self

        def as_numpy_iterator(self):
            yield np.arange(2), np.zeros((2, SIZE, SIZE, 3), np.uint8)
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "source_dataset", lambda part, size: Interrupted())
    with pytest.raises(KeyboardInterrupt):
        pipeline.prepare(part, SIZE, cache_dir=cache)
    assert list(cache.iterdir()) == []


def run_with_import_hook(module, action, main, *args):
    """Run ``main`` (Python code) with ``action`` (a statement) run the moment it first
    imports ``module``."""
    hook = textwrap.dedent(f"""
        import os, runpy, signal, sys

        class OnImport:
            def find_spec(self, name, path=None, target=None):
                if name == {module!r}:
                    sys.meta_path.remove(self)
                    {action}
                return None

        sys.meta_path.insert(0, OnImport())
        sys.argv = ["prog", *{list(args)!r}]
    """) + main
    return subprocess.run([sys.executable, "-c", hook], capture_output=True, text=True,
                          env=environment(), timeout=300)


def interrupt_on_import(module, main, *args):
    """Run ``main`` with a real SIGINT sent to itself the moment it imports ``module``:
    Ctrl-C at a chosen moment of the start, no timing to tune."""
    return run_with_import_hook(module, "os.kill(os.getpid(), signal.SIGINT)", main, *args)


def script(path):
    return f"runpy.run_path({path!r}, run_name='__main__')"


# What the pd-train entry point (setup.cfg) runs.
PD_TRAIN = "from playing_distraction.cli import train_main\nsys.exit(train_main())"


@pytest.mark.parametrize("prog, main, module", [
    ("train.py", script(TRAIN), "playing_distraction.config"),  # the package's import
    ("train.py", script(TRAIN), "tensorflow"),                  # train_main imports it
    ("train.py", PD_TRAIN, "tensorflow"),
    ("evaluate.py", script(EVALUATE), "playing_distraction.config"),
    ("evaluate.py", script(EVALUATE), "playing_distraction.reports"),  # in evaluate_main
], ids=["train.py-package", "train.py-tensorflow", "pd-train-tensorflow", "evaluate.py-package",
        "evaluate.py-reports"])
def test_ctrl_c_while_importing_exits_130_in_one_line(tmp_path, prog, main, module):
    args = ["--out-dir", str(tmp_path / "out")]
    if prog == "evaluate.py":
        args += ["--baseline", str(tmp_path / "run")]
    done = interrupt_on_import(module, main, *args)
    assert done.returncode == 130, done.stderr[-2000:]
    assert own_lines(done.stderr, prog) == [f"{prog}: error: interrupted"]


def failed_extension_on_import(module, main, *args):
    """Run ``main`` with the import of ``module`` failing as a compiled module does
    when Ctrl-C hits its initialisation: "ImportError: initialization failed", caused
    by the KeyboardInterrupt (seen with TensorFlow's _tf_stack)."""
    return run_with_import_hook(
        module, 'raise ImportError("initialization failed") from KeyboardInterrupt()', main,
        *args)


@pytest.mark.parametrize("prog, main, module", [
    ("train.py", script(TRAIN), "playing_distraction.config"),
    ("train.py", script(TRAIN), "tensorflow"),
    ("train.py", PD_TRAIN, "tensorflow"),
    ("evaluate.py", script(EVALUATE), "playing_distraction.reports"),
], ids=["train.py-package", "train.py-tensorflow", "pd-train-tensorflow", "evaluate.py-reports"])
def test_ctrl_c_in_a_compiled_modules_initialisation_exits_130_in_one_line(tmp_path, prog,
                                                                          main, module):
    args = ["--out-dir", str(tmp_path / "out")]
    if prog == "evaluate.py":
        args += ["--baseline", str(tmp_path / "run")]
    done = failed_extension_on_import(module, main, *args)
    assert done.returncode == 130, done.stderr[-2000:]
    assert own_lines(done.stderr, prog) == [f"{prog}: error: interrupted"]


def test_an_import_error_that_is_not_ctrl_c_stays_an_error():
    from playing_distraction.errors import caused_by_ctrl_c

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("initialization failed") from interrupt
    except ImportError as error:
        assert caused_by_ctrl_c(error)
    assert not caused_by_ctrl_c(ImportError("No module named 'tensorflow'"))


def test_ctrl_c_a_moment_after_the_start_exits_130_in_one_line(tmp_path):
    # Half a second: Python runs (its own start-up takes some 50 ms, and Ctrl-C then
    # is Python's business), train.py imports the package or TensorFlow.
    process = subprocess.Popen([sys.executable, TRAIN, "--out-dir", "out"], cwd=tmp_path,
                               env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert own_lines(stderr, "train.py") == ["train.py: error: interrupted"]


def test_ctrl_c_while_training_exits_130_with_the_resume_hint(tmp_path, fashion_dir):
    process = subprocess.Popen(
        [sys.executable, TRAIN, "--dataset", "fashion-mnist", "--data-dir", str(fashion_dir),
         "--epochs", "200", "--patience", "200", "--verbose", "2", "--out-dir", "out"],
        cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    watchdog = threading.Timer(240, process.kill)
    watchdog.start()
    for line in process.stdout:
        if line.startswith("Epoch 2/"):  # the first epoch and its checkpoint are done
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    watchdog.cancel()
    assert process.returncode == 130, stderr[-2000:]
    assert own_lines(stderr, "train.py") == [RESUME_HINT]


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize("args, message", [
    (["--learning-rate", "nan"], "--learning-rate must be a finite number, got nan"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite number, got inf"),
    (["--probability", "inf"], "--probability must be a finite number, got inf"),
    (["--method", "pairwise", "--gamma", "nan"], "--gamma must be a finite number, got nan"),
    (["--brightness", "nan", "1.5"], "--brightness must be finite numbers, got nan 1.5"),
    (["--hnc", "mse", "--hnc-weight", "inf"], "--hnc-weight must be a finite number, got inf"),
    (["--hnc", "kd", "--hnc-temperature=-inf"],
     "--hnc-temperature must be a finite number, got -inf"),
])
def test_a_number_that_is_not_finite_is_refused_before_anything_starts(tmp_path, args, message):
    done = subprocess.run([sys.executable, TRAIN, *args, "--epochs", "1", "--out-dir", "out"],
                          capture_output=True, text=True, cwd=tmp_path, env=environment(),
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"train.py: error: {message}"]
    assert not (tmp_path / "out").exists()
