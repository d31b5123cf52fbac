"""The pretrained suite's detector metric (benchmarks.pretrained_data.detection_agreement) on
YOLOv8 outputs built here, whose detections are known by construction."""

import numpy as np
import pytest

from benchmarks.pretrained_data import detection_agreement, yolo_detections

CLASSES = 18


def _output(anchors: list[tuple[float, float, float, float, int, float]], total: int = 50) -> np.ndarray:
    """[1, 4 + classes, total]: the given anchors (cx, cy, w, h, class, score), the rest of the
    anchors background (every class at 0.01)."""
    out = np.full((1, 4 + CLASSES, total), 0.01, np.float32)
    out[0, :4] = 10.0
    for a, (cx, cy, w, h, c, s) in enumerate(anchors):
        out[0, :4, a] = cx, cy, w, h
        out[0, 4 + c, a] = s
    return out


def test_detections_follow_the_wheels_thresholds_and_suppression():
    out = _output([(100, 100, 40, 40, 1, 0.9),   # kept
                   (102, 101, 40, 40, 1, 0.6),   # overlaps the first (IoU > 0.45): suppressed
                   (200, 200, 30, 30, 3, 0.5),   # another place: kept
                   (50, 250, 20, 20, 2, 0.22),   # above 0.2 but below NMS's 0.25: dropped
                   (250, 50, 20, 20, 4, 0.1)])   # below 0.2: not a decision
    got = yolo_detections(out)
    assert [c for c, _ in got] == [1, 3]
    np.testing.assert_allclose(got[0][1], [80, 80, 120, 120])


def test_agreement_is_one_on_itself_and_counts_lost_moved_and_relabelled_detections():
    metric = detection_agreement()
    ref = [[_output([(100, 100, 40, 40, 1, 0.9), (200, 200, 30, 30, 3, 0.5)])],
           [_output([(60, 60, 50, 50, 0, 0.8)])],
           [_output([])]]
    assert metric(ref, None, ref) == 1.0
    # Image 1 loses its second detection, image 2's box moves beyond IoU 0.5, image 3 gains one.
    got = [[_output([(100, 100, 40, 40, 1, 0.9)])],
           [_output([(100, 100, 50, 50, 0, 0.8)])],
           [_output([(150, 150, 20, 20, 5, 0.7)])]]
    # float: 3 detections; quantized: 3; matched: 1  ->  F1 = 2 * 1 / 6
    assert metric(got, None, ref) == pytest.approx(2 / 6)
    relabelled = [[_output([(100, 100, 40, 40, 2, 0.9), (200, 200, 30, 30, 3, 0.5)])], ref[1], ref[2]]
    assert metric(relabelled, None, ref) == pytest.approx(2 * 2 / 6)
    empty = [[_output([])]]
    assert metric(empty, None, empty) == 1.0  # nothing decided on either side: agreement


def test_decision_noise_moves_only_the_image_input_within_its_amplitude_and_range():
    from benchmarks.decision_noise import noisy
    from benchmarks.pretrained_data import Samples

    rng = np.random.default_rng(0)
    feeds = [{"x": rng.uniform(0, 1, (1, 3, 8, 8)).astype(np.float32), "k": np.array([3])}
             for _ in range(4)]
    moved = noisy(Samples(feeds, ["a"] * 4), "x", 1 / 255, 0.0, 1.0)
    for f, m in zip(feeds, moved.feeds, strict=True):
        d = m["x"] - f["x"]
        assert np.abs(d).max() <= 1 / 255 + 1e-6 and np.abs(d).max() > 0
        assert m["x"].min() >= 0.0 and m["x"].max() <= 1.0 and m["x"].dtype == np.float32
        assert m["k"] is f["k"]
    assert moved.labels == ["a"] * 4
