import numpy as np

from trainer.metrics import confusion_matrix, frame_scores


def test_hand_computed_f1():
    y = np.array([0, 0, 1, 1, 2, 2, -1])
    p = np.array([0, 1, 1, 1, 0, 2, 2])
    s = frame_scores(y, p, ["other", "a", "b"])
    # a: tp 2, fp 1, fn 0 -> 0.8 ; b: tp 1, fp 0, fn 1 -> 2/3 ; unlabelled frame ignored
    assert np.isclose(s["f1"]["a"], 0.8) and np.isclose(s["f1"]["b"], 2 / 3)
    assert np.isclose(s["macro_f1"], (0.8 + 2 / 3) / 2)
    assert s["frames"] == 6 and s["confusion"][2] == [1, 0, 1]


def test_absent_class_is_left_out_and_false_positives_count():
    y = np.array([0, 0, 1])
    s = frame_scores(y, np.array([0, 0, 1]), ["other", "a", "b"])
    assert s["f1"]["b"] is None and s["macro_f1"] == 1.0
    s2 = frame_scores(y, np.array([2, 0, 1]), ["other", "a", "b"])
    assert s2["f1"]["b"] == 0.0 and s2["macro_f1"] == 0.5


def test_confusion_counts():
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([1, 1, 0]), 2)
    assert cm.tolist() == [[0, 1], [1, 1]]
