"""The saved model is the plain classifier: it loads and predicts in a Keras app that
cannot import this package."""

import json
import subprocess
import sys

import keras
import numpy as np

from playing_distraction.config import TrainConfig
from playing_distraction.protocols import prepare_data
from playing_distraction.training import run_training

LOAD_WITHOUT_PACKAGE = r"""
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "playing_distraction":
            raise ImportError("playing_distraction must not be needed to load a saved model")

sys.meta_path.insert(0, Block())
import keras, numpy as np

images = np.load(sys.argv[1])
results = {}
for path in sys.argv[2:]:
    model = keras.models.load_model(path)
    results[path] = model.predict(images, verbose=0).tolist()
print(json.dumps(results))
"""


def test_saved_model_loads_and_predicts_without_the_package(tmp_path, fashion_dir):
    config = TrainConfig(
        dataset="fashion-mnist", data_dir=str(fashion_dir), epochs=1, out_dir=str(tmp_path),
        run_name="run", probability=1.0, verbose=0,
    ).resolved()
    run_dir = run_training(config, prepare_data(config))
    trained = keras.models.load_model(run_dir / "model.keras")
    assert trained.output.shape == (None, 10) and trained.input.shape == (None, 32, 32, 3)

    keras.config.set_dtype_policy("mixed_float16")
    mixed = keras.models.clone_model(trained)
    mixed.set_weights(trained.get_weights())
    keras.config.set_dtype_policy("float32")
    mixed_path = tmp_path / "mixed.keras"
    mixed.save(mixed_path)

    images = np.random.default_rng(0).random((5, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PACKAGE, str(tmp_path / "images.npy"),
         str(run_dir / "model.keras"), str(mixed_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    predicted = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(predicted[str(run_dir / "model.keras")],
                               trained.predict(images, verbose=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predicted[str(mixed_path)], trained.predict(images, verbose=0),
                               atol=0.05)
