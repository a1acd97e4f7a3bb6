"""tf.data pipelines: dtypes, ranges, RGB, batching, seeded shuffling."""

import numpy as np

from playing_distraction.layouts import Part
from playing_distraction.pipeline import make_dataset, prepare, to_model_input


def gray_part(count, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 28, 28)).astype(np.uint8)
    return Part(images, np.arange(count, dtype=np.int64))


def pipeline(part, size, batch_size, training, seed=None, **options):
    prepared = prepare(part, size)
    return make_dataset(prepared.images, prepared.labels, batch_size, training, seed, **options)


def batches(dataset):
    return [(images.numpy(), labels.numpy()) for images, labels in dataset]


def label_order(dataset):
    return np.concatenate([labels.numpy() for _, labels in dataset])


def test_make_dataset_batches_are_float32_rgb_in_unit_range():
    part = gray_part(10)
    for training in (True, False):
        for images, labels in batches(pipeline(part, 32, 4, training=training, seed=0)):
            assert images.dtype == np.float32 and images.shape[1:] == (32, 32, 3)
            assert labels.dtype == np.int32
            assert images.min() >= 0.0 and images.max() <= 1.0
            np.testing.assert_array_equal(images[..., 0], images[..., 1])
            np.testing.assert_array_equal(images[..., 0], images[..., 2])
            # Each image is its own source image, resized (labels are the indices).
            for image, label in zip(images, labels):
                source = part.images[label].astype(np.float64) / 255
                assert abs(image[..., 0].mean() - source.mean()) < 0.02


def test_training_drops_incomplete_last_batch():
    result = batches(pipeline(gray_part(10), 32, 4, training=True, seed=0))
    assert [len(labels) for _, labels in result] == [4, 4]
    seen = np.concatenate([labels for _, labels in result])
    assert len(set(seen.tolist())) == 8 and set(seen.tolist()) <= set(range(10))


def test_evaluation_keeps_every_image_in_order():
    part = gray_part(10)
    result = batches(pipeline(part, 32, 4, training=False))
    assert [len(labels) for _, labels in result] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([labels for _, labels in result]),
                                  np.arange(10))
    images = np.concatenate([images for images, _ in result])
    expected = np.stack([to_model_input(image, 32).numpy() for image in part.images])
    np.testing.assert_allclose(images, expected, atol=1e-6)


def test_same_seed_same_batches_and_reshuffled_every_epoch():
    part = gray_part(40)
    first = pipeline(part, 32, 8, training=True, seed=123)
    second = pipeline(part, 32, 8, training=True, seed=123)
    first_epochs = [label_order(first), label_order(first)]
    second_epochs = [label_order(second), label_order(second)]
    for a, b in zip(first_epochs, second_epochs):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first_epochs[0], first_epochs[1])
    assert not np.array_equal(first_epochs[0], np.arange(40))  # actually shuffled
    other = pipeline(part, 32, 8, training=True, seed=124)
    assert not np.array_equal(label_order(other), first_epochs[0])


def test_black_maps_to_zero_and_white_to_exactly_one():
    part = Part(np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)]),
                np.array([0, 1]))
    (images, _), = batches(pipeline(part, 32, 2, training=False))
    assert np.all(images[0] == 0.0) and np.all(images[1] == 1.0)


def test_to_model_input_keeps_rgb_colours():
    red = np.zeros((20, 24, 3), np.uint8)
    red[..., 0] = 255
    out = to_model_input(red, 32).numpy()
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], 1.0, atol=1e-6)
    assert np.all(out[..., 1:] == 0.0)

    colour = np.broadcast_to(np.array([255, 128, 0], np.uint8), (40, 30, 3))
    out = to_model_input(colour, 32).numpy()
    np.testing.assert_allclose(out, np.broadcast_to([1.0, 128 / 255, 0.0], out.shape), atol=1e-6)


def test_to_model_input_grayscale_downsizes_and_repeats_channel():
    image = np.zeros((64, 64), np.uint8)
    image[:, 32:] = 200
    out = to_model_input(image, 32).numpy()
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    np.testing.assert_allclose(out[:, :15, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[:, 17:, 1], 200 / 255, atol=1e-6)


def test_epoch_stream_resumes_with_exactly_the_batches_of_later_epochs():
    """A run resumed at epoch k sees the batches the uninterrupted run saw there."""
    from playing_distraction.augmentation import Augmentation

    prepared = prepare(gray_part(20), 32)
    options = dict(training=True, seed=5, augmentation=Augmentation())

    def stream(first, stop):
        return batches(make_dataset(prepared.images, prepared.labels, 8, epochs=(first, stop),
                                    **options))

    whole = stream(0, 3)
    assert len(whole) == 3 * 2  # 20 // 8 full batches per epoch
    resumed = stream(0, 1) + stream(1, 3)
    for (images, labels), (again, labels_again) in zip(whole, resumed):
        np.testing.assert_array_equal(labels, labels_again)
        np.testing.assert_array_equal(images, again)
    # Every epoch is a new permutation: no epoch repeats the first one's batches.
    first_epoch = np.concatenate([labels for _, labels in whole[:2]])
    for epoch in (1, 2):
        later = np.concatenate([labels for _, labels in whole[2 * epoch: 2 * epoch + 2]])
        assert len(set(later.tolist())) == 16 and not np.array_equal(later, first_epoch)
