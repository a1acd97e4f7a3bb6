"""Layout readers on tiny fixtures in each dataset's official on-disk format:
Stanford Cars (.mat annotations), FGVC-Aircraft (split text files), EgoFoodPlaces
(manifest.csv, event split), generic class folders, and ``load_dataset`` options."""

import csv
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from playing_distraction.datasets import load_dataset
from playing_distraction.errors import UserError
from playing_distraction.layouts import (
    read_aircraft,
    read_cars,
    read_egofoodplaces,
    read_folder,
)

_PIXELS = np.full((4, 6, 3), 127, np.uint8)


def write_image(path):
    """A tiny real image file (format from the suffix); readers only check it exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), _PIXELS), path
    return path


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --------------------------------------------------------------- Stanford Cars

CARS_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
CARS_CLASSES = ["Audi TT Coupe 2012", "AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
# (x1, y1, x2, y2, class, fname): MATLAB boxes (1-indexed, inclusive), classes 1..K.
CARS_TRAIN = [
    (1, 2, 30, 40, 1, "00001.jpg"),
    (5, 6, 70, 80, 2, "00002.jpg"),
    (10, 11, 12, 13, 3, "00003.jpg"),
    (3, 4, 50, 60, 1, "00004.jpg"),
    (7, 9, 21, 22, 2, "00005.jpg"),
]
CARS_TEST = [
    (2, 3, 44, 55, 3, "00001.jpg"),
    (8, 1, 18, 11, 1, "00002.jpg"),
    (4, 4, 9, 9, 2, "00003.jpg"),
]


def cars_struct(records):
    """A 1×N MATLAB struct array with object fields, as in the real annotation files."""
    array = np.zeros((1, len(records)), dtype=[(field, "O") for field in CARS_FIELDS])
    for i, (x1, y1, x2, y2, label, fname) in enumerate(records):
        for field, value in zip(CARS_FIELDS[:4], (x1, y1, x2, y2)):
            array[0, i][field] = np.array([[value]], np.uint16)
        array[0, i]["class"] = np.array([[label]], np.uint8)
        array[0, i]["fname"] = np.array([fname])
    return array


def write_cars_annotations(path, records):
    scipy.io.savemat(path, {"annotations": cars_struct(records)})


def write_cars(root, train=CARS_TRAIN, test=CARS_TEST, classes=CARS_CLASSES,
               test_in_devkit=False):
    (root / "devkit").mkdir(parents=True)
    names = np.empty((1, len(classes)), object)
    names[0, :] = classes
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": names})
    write_cars_annotations(root / "devkit" / "cars_train_annos.mat", train)
    test_folder = root / "devkit" if test_in_devkit else root
    write_cars_annotations(test_folder / "cars_test_annos_withlabels.mat", test)
    for folder, records in (("cars_train", train), ("cars_test", test)):
        for record in records:
            write_image(root / folder / record[-1])
    return root


@pytest.fixture
def cars_dir(tmp_path):
    return write_cars(tmp_path / "cars")


def expected_boxes(records):
    return np.array([(x1 - 1, y1 - 1, x2, y2) for x1, y1, x2, y2, _, _ in records])


def test_read_cars_parts_labels_class_names_and_paths(cars_dir):
    dataset = read_cars(cars_dir)
    assert dataset.class_names == tuple(CARS_CLASSES) and dataset.num_classes == 3
    assert dataset.validation is None
    for part, records, folder in ((dataset.train, CARS_TRAIN, "cars_train"),
                                  (dataset.test, CARS_TEST, "cars_test")):
        assert len(part) == len(records)
        assert part.images is None
        # Class c in the file (1-indexed) is label c - 1.
        np.testing.assert_array_equal(part.labels, [record[4] - 1 for record in records])
        assert [Path(p) for p in part.paths] == [cars_dir / folder / r[-1] for r in records]
        assert part.boxes is None  # crop_to_box is off by default
        assert part.trim_bottom == 0


def test_read_cars_crop_to_box_gives_zero_indexed_half_open_boxes(cars_dir):
    dataset = read_cars(cars_dir, crop_to_box=True)
    for part, records in ((dataset.train, CARS_TRAIN), (dataset.test, CARS_TEST)):
        assert part.boxes.shape == (len(records), 4)
        assert np.issubdtype(part.boxes.dtype, np.integer)
        np.testing.assert_array_equal(part.boxes, expected_boxes(records))
    # The first training box (1, 2)..(30, 40) inclusive covers 30 × 39 pixels.
    x0, y0, x1, y1 = dataset.train.boxes[0]
    assert (x0, y0, x1 - x0, y1 - y0) == (0, 1, 30, 39)


@pytest.mark.parametrize("crop_to_box, has_boxes", [(True, True), (False, False), (None, False)])
def test_load_dataset_cars_crop_to_box_option(cars_dir, crop_to_box, has_boxes):
    dataset = load_dataset("cars", cars_dir, crop_to_box=crop_to_box)
    assert dataset.name == "cars"
    assert len(dataset.train) == 5 and len(dataset.test) == 3
    if has_boxes:
        np.testing.assert_array_equal(dataset.train.boxes, expected_boxes(CARS_TRAIN))
    else:
        assert dataset.train.boxes is None and dataset.test.boxes is None


def test_read_cars_test_annotations_in_devkit(tmp_path):
    root = write_cars(tmp_path / "cars", test_in_devkit=True)
    assert not (root / "cars_test_annos_withlabels.mat").exists()
    dataset = read_cars(root, crop_to_box=True)
    np.testing.assert_array_equal(dataset.test.labels, [2, 0, 1])
    np.testing.assert_array_equal(dataset.test.boxes, expected_boxes(CARS_TEST))


def test_read_cars_single_annotation_file(tmp_path):
    """scipy squeezes a 1×1 struct array to 0-d; the reader still sees one image."""
    root = write_cars(tmp_path / "cars", test=[(3, 5, 20, 25, 2, "only.jpg")])
    assert scipy.io.loadmat(root / "cars_test_annos_withlabels.mat",
                            squeeze_me=True)["annotations"].shape == ()
    dataset = read_cars(root, crop_to_box=True)
    assert len(dataset.test) == 1
    np.testing.assert_array_equal(dataset.test.labels, [1])
    np.testing.assert_array_equal(dataset.test.boxes, [[2, 4, 20, 25]])
    assert Path(dataset.test.paths[0]) == root / "cars_test" / "only.jpg"


def test_read_cars_mirror_with_nested_image_folders(tmp_path):
    root = write_cars(tmp_path / "cars")
    for folder in ("cars_train", "cars_test"):
        (root / folder).rename(root / f"{folder}-tmp")
        (root / folder).mkdir()
        (root / f"{folder}-tmp").rename(root / folder / folder)
    dataset = read_cars(root)
    assert Path(dataset.train.paths[0]) == root / "cars_train" / "cars_train" / "00001.jpg"
    assert Path(dataset.test.paths[2]) == root / "cars_test" / "cars_test" / "00003.jpg"


@pytest.mark.parametrize("folder", ["cars_train", "cars_test"])
def test_read_cars_missing_image_folder(cars_dir, folder):
    shutil.rmtree(cars_dir / folder)
    with pytest.raises(UserError) as info:
        read_cars(cars_dir)
    message = str(info.value)
    assert str(cars_dir / folder) in message
    assert "Stanford Cars layout" in message and "cars_meta.mat" in message


def test_read_cars_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as info:
        read_cars(missing)
    assert str(missing) in str(info.value)
    assert "Stanford Cars layout" in str(info.value)


@pytest.mark.parametrize("name", ["devkit/cars_meta.mat", "devkit/cars_train_annos.mat",
                                  "cars_test_annos_withlabels.mat"])
def test_read_cars_missing_mat_file(cars_dir, name):
    (cars_dir / name).unlink()
    with pytest.raises(UserError) as info:
        read_cars(cars_dir)
    assert str(cars_dir / name) in str(info.value)


@pytest.mark.parametrize("bad_class", [0, len(CARS_CLASSES) + 1])
@pytest.mark.parametrize("part", ["train", "test"])
def test_read_cars_class_out_of_range(tmp_path, part, bad_class):
    records = list(CARS_TRAIN if part == "train" else CARS_TEST)
    records[1] = records[1][:4] + (bad_class,) + records[1][5:]
    root = write_cars(tmp_path / "cars", **{part: records})
    path = root / ("devkit/cars_train_annos.mat" if part == "train"
                   else "cars_test_annos_withlabels.mat")
    with pytest.raises(UserError) as info:
        read_cars(root)
    message = str(info.value)
    assert str(path) in message
    assert "annotation 2 " in message and records[1][-1] in message
    assert f"class {bad_class}," in message and "1..3" in message


def test_read_cars_class_without_training_images(tmp_path):
    train = [record[:4] + (1 + i % 2,) + record[5:] for i, record in enumerate(CARS_TRAIN)]
    root = write_cars(tmp_path / "cars", train=train)
    with pytest.raises(UserError, match="no training images") as info:
        read_cars(root)
    message = str(info.value)
    assert repr(CARS_CLASSES[2]) in message
    assert repr(CARS_CLASSES[0]) not in message and repr(CARS_CLASSES[1]) not in message


def test_read_cars_listed_image_missing(cars_dir):
    missing = cars_dir / "cars_test" / "00002.jpg"
    missing.unlink()
    with pytest.raises(UserError) as info:
        read_cars(cars_dir)
    message = str(info.value)
    assert str(missing) in message
    assert "cars_test_annos_withlabels.mat" in message


# --------------------------------------------------------------- FGVC-Aircraft

# File order, deliberately not alphabetical: labels index these lists.
VARIANTS = ["Cessna 172", "Boeing 737-800", "F/A-18", "DHC-1", "Boeing 737-700"]
FAMILIES = ["Cessna 172", "Boeing 737", "F/A-18", "DHC-1"]
MANUFACTURERS = ["McDonnell Douglas", "Boeing", "Cessna", "de Havilland"]
HIERARCHY = {  # variant -> (family, manufacturer)
    "Cessna 172": ("Cessna 172", "Cessna"),
    "Boeing 737-800": ("Boeing 737", "Boeing"),
    "F/A-18": ("F/A-18", "McDonnell Douglas"),
    "DHC-1": ("DHC-1", "de Havilland"),
    "Boeing 737-700": ("Boeing 737", "Boeing"),
}
LEVEL_NAMES = {"variant": VARIANTS, "family": FAMILIES, "manufacturer": MANUFACTURERS}


def aircraft_images():
    """{split: [(image id, {level: label})]}: two trainval and one test image per variant."""
    images = {"trainval": [], "test": []}
    number = 1000000
    for round_ in range(3):
        for variant in reversed(VARIANTS):
            family, manufacturer = HIERARCHY[variant]
            split = "test" if round_ == 2 else "trainval"
            images[split].append((f"{number:07d}", {"variant": variant, "family": family,
                                                    "manufacturer": manufacturer}))
            number += 37
    return images


AIRCRAFT_IMAGES = aircraft_images()


def write_aircraft(root):
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    for level, file in (("variant", "variants.txt"), ("family", "families.txt"),
                        ("manufacturer", "manufacturers.txt")):
        (data / file).write_text("".join(f"{name}\n" for name in LEVEL_NAMES[level]))
        for split, images in AIRCRAFT_IMAGES.items():
            (data / f"images_{level}_{split}.txt").write_text(
                "".join(f"{image_id} {labels[level]}\n" for image_id, labels in images))
    for images in AIRCRAFT_IMAGES.values():
        for image_id, _ in images:
            write_image(data / "images" / f"{image_id}.jpg")
    return root


@pytest.fixture
def aircraft_dir(tmp_path):
    return write_aircraft(tmp_path / "aircraft")


def aircraft_data(root):
    return root / "fgvc-aircraft-2013b" / "data"


@pytest.mark.parametrize("level", ["variant", "family", "manufacturer"])
def test_read_aircraft_levels_trainval_is_train_and_test_is_test(aircraft_dir, level):
    dataset = read_aircraft(aircraft_dir, level=level)
    names = LEVEL_NAMES[level]
    assert dataset.class_names == tuple(names)
    assert dataset.validation is None
    data = aircraft_data(aircraft_dir)
    for part, split in ((dataset.train, "trainval"), (dataset.test, "test")):
        images = AIRCRAFT_IMAGES[split]
        assert len(part) == len(images)
        assert [Path(p) for p in part.paths] == [data / "images" / f"{i}.jpg" for i, _ in images]
        # Labels index the names file in file order; labels with spaces parse whole.
        np.testing.assert_array_equal(
            part.labels, [names.index(labels[level]) for _, labels in images])
        assert part.trim_bottom == 0 and part.boxes is None


def test_read_aircraft_labels_with_spaces_and_slashes(aircraft_dir):
    dataset = read_aircraft(aircraft_dir)
    train_names = [dataset.class_names[label] for label in dataset.train.labels]
    assert train_names[:5] == list(reversed(VARIANTS))
    assert Counter(train_names) == {name: 2 for name in VARIANTS}
    assert "Boeing 737-800" in train_names and "F/A-18" in train_names


@pytest.mark.parametrize("remove_banner, rows", [(True, 20), (False, 0)])
def test_read_aircraft_remove_banner(aircraft_dir, remove_banner, rows):
    dataset = read_aircraft(aircraft_dir, remove_banner=remove_banner)
    assert dataset.train.trim_bottom == rows and dataset.test.trim_bottom == rows


@pytest.mark.parametrize("where", ["fgvc-aircraft-2013b", "fgvc-aircraft-2013b/data"])
def test_read_aircraft_accepts_inner_folders(aircraft_dir, where):
    inner = read_aircraft(aircraft_dir / where, level="family")
    outer = read_aircraft(aircraft_dir, level="family")
    assert inner.class_names == outer.class_names
    np.testing.assert_array_equal(inner.train.labels, outer.train.labels)
    np.testing.assert_array_equal(inner.test.paths, outer.test.paths)


def test_read_aircraft_unknown_label_names_line_and_label(aircraft_dir):
    path = aircraft_data(aircraft_dir) / "images_variant_test.txt"
    lines = path.read_text().splitlines()
    lines[2] = f"{lines[2].split()[0]} Boeing 747-400"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as info:
        read_aircraft(aircraft_dir)
    message = str(info.value)
    assert f"{path}:3:" in message and "'Boeing 747-400'" in message


def test_read_aircraft_line_without_label(aircraft_dir):
    path = aircraft_data(aircraft_dir) / "images_family_trainval.txt"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].split()[0]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as info:
        read_aircraft(aircraft_dir, level="family")
    assert f"{path}:2:" in str(info.value)


@pytest.mark.parametrize("name", ["images_manufacturer_trainval.txt",
                                  "images_manufacturer_test.txt", "manufacturers.txt"])
def test_read_aircraft_missing_file(aircraft_dir, name):
    path = aircraft_data(aircraft_dir) / name
    path.unlink()
    with pytest.raises(UserError) as info:
        read_aircraft(aircraft_dir, level="manufacturer")
    assert str(path) in str(info.value)
    read_aircraft(aircraft_dir, level="variant")  # the other levels are unaffected


def test_read_aircraft_missing_images_folder_and_unknown_level(aircraft_dir):
    with pytest.raises(UserError, match="unknown aircraft level 'model'"):
        read_aircraft(aircraft_dir, level="model")
    shutil.rmtree(aircraft_data(aircraft_dir) / "images")
    with pytest.raises(UserError, match="no images/ folder") as info:
        read_aircraft(aircraft_dir)
    assert str(aircraft_dir) in str(info.value)


def test_read_aircraft_listed_image_missing(aircraft_dir):
    image_id = AIRCRAFT_IMAGES["test"][3][0]
    missing = aircraft_data(aircraft_dir) / "images" / f"{image_id}.jpg"
    missing.unlink()
    with pytest.raises(UserError) as info:
        read_aircraft(aircraft_dir)
    assert str(missing) in str(info.value)


# --------------------------------------------------------------- EgoFoodPlaces

PLACES = ["supermarket", "restaurant", "pub_indoor", "pizzeria", "market_outdoor",
          "market_indoor", "kitchen", "ice_cream_parlor", "food_court", "dining_room",
          "coffee_shop", "cafeteria", "beer_hall", "bar", "bakery"]


def ego_rows(seed=0, events_per_class=10):
    """[(path, label, event)]: 15 places, each with events of 1..7 images."""
    rng = np.random.default_rng(seed)
    rows = []
    for place in PLACES:
        for number in range(events_per_class):
            event = f"{place}-ev{number:02d}"
            for image in range(int(rng.integers(1, 8))):
                rows.append((f"images/{place}/{event}_{image:03d}.jpg", place, event))
    return rows


EGO_ROWS = ego_rows()


def write_ego(root, rows=EGO_ROWS, splits=None, header=("path", "label", "event")):
    """manifest.csv (with a split column if ``splits`` is given) and the images."""
    root.mkdir(parents=True, exist_ok=True)
    if splits is not None:
        header = (*header, "split")
        rows = [(*row, split) for row, split in zip(rows, splits)]
    write_csv(root / "manifest.csv", header, rows)
    for row in rows:
        write_image(root / row[0])
    return root


@pytest.fixture
def ego_dir(tmp_path):
    return write_ego(tmp_path / "ego")


def split_paths(dataset, root):
    """{part name: sorted image paths relative to root}."""
    return {name: sorted(str(Path(p).relative_to(root)) for p in part.paths)
            for name, part in dataset.parts().items()}


def test_event_split_is_event_disjoint_covering_and_near_70_10_20(ego_dir):
    dataset = read_egofoodplaces(ego_dir)
    assert dataset.class_names == tuple(sorted(PLACES)) and dataset.num_classes == 15
    parts = dataset.parts()
    assert set(parts) == {"train", "validation", "test"}
    row_of = {str(ego_dir / path): (label, event) for path, label, event in EGO_ROWS}

    # Every image in exactly one part, with its own label and event.
    all_paths = [path for part in parts.values() for path in part.paths]
    assert sorted(all_paths) == sorted(row_of)
    for part in parts.values():
        assert [row_of[p][0] for p in part.paths] == [dataset.class_names[k] for k in part.labels]
        assert [row_of[p][1] for p in part.paths] == list(part.events)

    # No event in two parts.
    events = {name: set(part.events) for name, part in parts.items()}
    assert not events["train"] & events["validation"]
    assert not events["train"] & events["test"]
    assert not events["validation"] & events["test"]

    total = len(EGO_ROWS)
    for name, target in (("train", 0.7), ("validation", 0.1), ("test", 0.2)):
        assert abs(len(parts[name]) / total - target) < 0.04, (name, len(parts[name]), total)
    # Every class has training images (the reader checks it; the split aims for it).
    assert set(dataset.train.labels) == set(range(15))


def test_event_split_is_seeded(ego_dir):
    first = split_paths(read_egofoodplaces(ego_dir), ego_dir)
    assert split_paths(read_egofoodplaces(ego_dir, split_seed=0), ego_dir) == first
    other = split_paths(read_egofoodplaces(ego_dir, split_seed=1), ego_dir)
    assert other != first
    assert sorted(sum(other.values(), [])) == sorted(sum(first.values(), []))


def test_event_split_fractions_through_load_dataset(ego_dir):
    dataset = load_dataset("egofoodplaces", ego_dir, event_split=(0.8, 0.0, 0.2))
    assert dataset.validation is None
    share = len(dataset.train) / len(EGO_ROWS)
    assert abs(share - 0.8) < 0.04
    assert not set(dataset.train.events) & set(dataset.test.events)
    # None keeps the reader's default 70/10/20.
    default = load_dataset("egofoodplaces", ego_dir, event_split=None)
    assert default.validation is not None
    assert split_paths(default, ego_dir) == split_paths(read_egofoodplaces(ego_dir), ego_dir)


def given_splits(rows):
    """A split per row, by event: events 0-6 train, 7 val, 8-9 test."""
    names = {**{n: "train" for n in range(7)}, 7: "val", 8: "test", 9: "test"}
    return [names[int(event.rsplit("ev", 1)[1])] for _, _, event in rows]


def test_split_column_is_used(tmp_path):
    splits = given_splits(EGO_ROWS)
    root = write_ego(tmp_path / "ego", splits=splits)
    dataset = read_egofoodplaces(root)
    expected = {"train": [], "validation": [], "test": []}
    for (path, _, _), split in zip(EGO_ROWS, splits):
        expected[{"val": "validation"}.get(split, split)].append(path)
    assert split_paths(dataset, root) == {name: sorted(paths) for name, paths in expected.items()}
    assert dataset.class_names == tuple(sorted(PLACES))
    # The split seed plays no part when the manifest gives the split.
    assert split_paths(read_egofoodplaces(root, split_seed=5), root) == split_paths(dataset, root)


def test_split_column_event_in_two_splits(tmp_path):
    splits = given_splits(EGO_ROWS)
    index = next(i for i, row in enumerate(EGO_ROWS)
                 if row[2] == "kitchen-ev03" and i + 1 < len(EGO_ROWS)
                 and EGO_ROWS[i + 1][2] == "kitchen-ev03")
    splits[index] = "test"
    root = write_ego(tmp_path / "ego", splits=splits)
    with pytest.raises(UserError) as info:
        read_egofoodplaces(root)
    message = str(info.value).split("manifest.csv", 1)[1]  # the tmp path says "test" too
    assert "'kitchen-ev03'" in message and "train" in message and "test" in message


def test_manifest_without_event_column(tmp_path):
    rows = [(path, label) for path, label, _ in EGO_ROWS]
    root = write_ego(tmp_path / "ego", rows=rows, header=("path", "label"))
    with pytest.raises(UserError) as info:
        read_egofoodplaces(root)
    message = str(info.value)
    assert f"{root / 'manifest.csv'}:1:" in message
    assert "event" in message.split(":1:", 1)[1]


@pytest.mark.parametrize("column", [1, 2])
def test_manifest_empty_label_or_event(tmp_path, column):
    rows = [list(row) for row in EGO_ROWS]
    rows[6][column] = ""
    root = write_ego(tmp_path / "ego", rows=rows)
    with pytest.raises(UserError) as info:
        read_egofoodplaces(root)
    message = str(info.value)
    assert f"{root / 'manifest.csv'}:8:" in message  # header is line 1, rows[6] is line 8
    assert f"empty '{('label', 'event')[column - 1]}'" in message


@pytest.mark.parametrize("row, value, line, detail", [
    (3, "training", 5, "'training'"),  # not a split name
    (9, "", 11, "empty 'split'"),      # a split on some lines only
])
def test_manifest_bad_split_column(tmp_path, row, value, line, detail):
    splits = given_splits(EGO_ROWS)
    splits[row] = value
    root = write_ego(tmp_path / "ego", splits=splits)
    with pytest.raises(UserError) as info:
        read_egofoodplaces(root)
    message = str(info.value)
    assert f"{root / 'manifest.csv'}:{line}:" in message and detail in message


def test_manifest_row_with_extra_field_is_user_error(tmp_path):
    """An unquoted comma in a field gives the row more fields than the header."""
    root = write_ego(tmp_path / "ego")
    manifest = root / "manifest.csv"
    lines = manifest.read_text().splitlines()
    lines[4] = lines[4] + ",second thoughts"
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as info:
        read_egofoodplaces(root)
    assert f"{manifest}:5" in str(info.value)


def test_manifest_listed_image_missing(ego_dir):
    missing = ego_dir / EGO_ROWS[20][0]
    missing.unlink()
    with pytest.raises(UserError) as info:
        read_egofoodplaces(ego_dir)
    assert str(missing) in str(info.value)


# -------------------------------------------------------------- generic folder

FOLDER_CLASSES = {"zebra": 3, "apple": 2, "mango": 4, "cherry": 1, "banana": 2}  # training images


def write_folder(root, splits=("train", "test")):
    for split in splits:
        for name, count in FOLDER_CLASSES.items():
            for number in range(count if split == "train" else 2):
                write_image(root / split / name / f"{name}{number}.{'png' if number else 'jpg'}")
            (root / split / name / "notes.txt").write_text("not an image\n")
        (root / split / "README.txt").write_text("not a class\n")
    return root


@pytest.fixture
def folder_dir(tmp_path):
    return write_folder(tmp_path / "folder")


def test_read_folder_classes_sorted_and_parts(folder_dir):
    dataset = read_folder(folder_dir)
    assert dataset.class_names == ("apple", "banana", "cherry", "mango", "zebra")
    assert dataset.validation is None
    assert len(dataset.train) == 12 and len(dataset.test) == 10
    for part in (dataset.train, dataset.test):
        for path, label in zip(part.paths, part.labels):
            path = Path(path)
            assert path.parent.name == dataset.class_names[label]
            assert path.suffix in (".jpg", ".png")  # notes.txt is not an image
    assert Counter(dataset.train.labels.tolist()) == {0: 2, 1: 2, 2: 1, 3: 4, 4: 3}
    assert Counter(dataset.test.labels.tolist()) == {k: 2 for k in range(5)}
    assert all(Path(p).is_relative_to(folder_dir / "train") for p in dataset.train.paths)
    assert all(Path(p).is_relative_to(folder_dir / "test") for p in dataset.test.paths)


def test_read_folder_val_folder_is_validation_part(tmp_path):
    root = write_folder(tmp_path / "folder", splits=("train", "val", "test"))
    dataset = load_dataset("folder", root)
    assert set(dataset.parts()) == {"train", "validation", "test"}
    assert len(dataset.validation) == 10
    assert all(Path(p).is_relative_to(root / "val") for p in dataset.validation.paths)
    assert [Path(p).parent.name for p in dataset.validation.paths] == [
        dataset.class_names[label] for label in dataset.validation.labels]


@pytest.mark.parametrize("split", ["train", "test"])
def test_read_folder_class_folder_without_images(folder_dir, split):
    empty = folder_dir / split / "mango"
    for file in empty.glob("*.*"):
        if file.suffix != ".txt":
            file.unlink()
    assert (empty / "notes.txt").is_file()
    with pytest.raises(UserError) as info:
        read_folder(folder_dir)
    assert str(empty) in str(info.value)


def test_read_folder_test_class_not_in_train(folder_dir):
    write_image(folder_dir / "test" / "kiwi" / "kiwi0.jpg")
    with pytest.raises(UserError) as info:
        read_folder(folder_dir)
    message = str(info.value)
    assert "'kiwi'" in message and str(folder_dir / "test") in message


def test_read_folder_missing_test_folder(folder_dir):
    shutil.rmtree(folder_dir / "test")
    with pytest.raises(UserError) as info:
        read_folder(folder_dir)
    assert str(folder_dir / "test") in str(info.value)


MANIFEST_ROWS = [
    ("img/a0.jpg", "cat", "train"),
    ("img/a1.jpg", "dog", "train"),
    ("img/a2.jpg", "cat", "test"),
    ("img/a3.jpg", "dog", "val"),
    ("img/a4.jpg", "bird", "train"),
    ("img/a5.jpg", "dog", "test"),
]


def write_manifest_folder(root, rows=MANIFEST_ROWS):
    root.mkdir(parents=True)
    write_csv(root / "manifest.csv", ("path", "label", "split"), rows)
    for path, _, _ in rows:
        write_image(root / path)
    return root


def test_read_folder_manifest(tmp_path):
    root = write_manifest_folder(tmp_path / "folder")
    dataset = read_folder(root)
    assert dataset.class_names == ("bird", "cat", "dog")
    assert [Path(p) for p in dataset.train.paths] == [root / "img/a0.jpg", root / "img/a1.jpg",
                                                      root / "img/a4.jpg"]
    np.testing.assert_array_equal(dataset.train.labels, [1, 2, 0])
    np.testing.assert_array_equal(dataset.test.labels, [1, 2])
    assert [Path(p) for p in dataset.validation.paths] == [root / "img/a3.jpg"]
    np.testing.assert_array_equal(dataset.validation.labels, [2])


def test_read_folder_manifest_saved_with_a_byte_order_mark(tmp_path):
    """Spreadsheet programs write UTF-8 CSV with a BOM; the header must still read."""
    root = write_manifest_folder(tmp_path / "folder")
    manifest = root / "manifest.csv"
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    assert read_folder(root).class_names == ("bird", "cat", "dog")


def test_read_folder_manifest_test_label_without_training_images(tmp_path):
    rows = [*MANIFEST_ROWS[:4], ("img/a9.jpg", "fox", "test"), *MANIFEST_ROWS[4:]]
    root = write_manifest_folder(tmp_path / "folder", rows)
    with pytest.raises(UserError) as info:
        read_folder(root)
    message = str(info.value)
    assert f"{root / 'manifest.csv'}:6:" in message and "'fox'" in message


# ---------------------------------------------------------------- load_dataset


def test_load_dataset_passes_aircraft_options(aircraft_dir):
    dataset = load_dataset("aircraft", aircraft_dir, aircraft_level="family", remove_banner=True)
    assert dataset.class_names == tuple(FAMILIES)
    assert dataset.train.trim_bottom == 20
    np.testing.assert_array_equal(
        dataset.test.labels,
        [FAMILIES.index(labels["family"]) for _, labels in AIRCRAFT_IMAGES["test"]])


def test_load_dataset_none_options_keep_reader_defaults(aircraft_dir):
    dataset = load_dataset("aircraft", aircraft_dir, aircraft_level=None, remove_banner=None)
    assert dataset.class_names == tuple(VARIANTS)
    assert dataset.train.trim_bottom == 0 and dataset.test.trim_bottom == 0


@pytest.mark.parametrize("name, option", [("folder", "crop_to_box"), ("cars", "aircraft_level"),
                                          ("aircraft", "level"), ("egofoodplaces", "split_seed")])
def test_load_dataset_option_the_dataset_does_not_take(tmp_path, name, option):
    with pytest.raises(TypeError) as info:
        load_dataset(name, tmp_path, **{option: 1})
    assert name in str(info.value) and option in str(info.value)
