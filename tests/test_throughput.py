"""The pipeline throughput command: it measures every stage it names, on real files."""

import json

import pytest

from playing_distraction.throughput import main


def test_throughput_on_synthetic_jpegs(tmp_path, capsys):
    out = tmp_path / "rates.json"
    assert main(["--images", "10", "--image-size", "32", "--batch-size", "4", "--epochs", "2",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    counts = {row["stage"]: row["images"] for row in rows}
    assert counts == {
        "decode + resize (fills the cache)": 10,
        "decode + resize + augment, streamed": 10,
        "from the cache + augment (training)": 16,  # 2 epochs of 2 full batches
        "from the cache (evaluation)": 20,
    }
    assert all(row["images_per_second"] > 0 for row in rows)
    printed = capsys.readouterr().out
    assert "10 synthetic 700x480 JPEGs" in printed and printed.count("\n| ") == 5


def test_throughput_on_a_registered_dataset(tmp_path, fashion_dir, capsys):
    assert main(["--dataset", "fashion-mnist", "--data-dir", str(fashion_dir), "--limit", "12",
                 "--image-size", "32", "--epochs", "1"]) == 0
    assert "12 training images of fashion-mnist" in capsys.readouterr().out


def test_throughput_bad_input_is_one_line(tmp_path, capsys):
    assert main(["--epochs", "0"]) == 2
    assert main(["--dataset", "cars", "--data-dir", str(tmp_path / "none")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "throughput: error: --epochs must be positive"
    assert lines[1].startswith("throughput: error: missing folder") and "cars_meta.mat" in lines[1]


def test_throughput_bad_flag_value_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--epochs", "three"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "throughput: error: argument --epochs: invalid int value: 'three'\n")
