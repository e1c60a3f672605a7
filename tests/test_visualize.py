"""Drawing: zero people is a valid picture (the model may find nobody)."""

import cv2
import numpy as np
import pytest

from efficienthrnet.visualize import draw_people, person_colours, save_debug_png, save_people_png


def _image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("empty", [np.zeros((0, 17, 3)), np.zeros((0,)), []])
def test_zero_people_leave_the_image_unchanged(empty):
    image = _image()
    drawn = draw_people(image, empty, "coco17")
    np.testing.assert_array_equal(drawn, image)
    assert drawn is not image  # a copy, as with people
    assert person_colours(0).shape == (0, 3)


def test_zero_people_pngs_are_written(tmp_path):
    image = _image()
    path = save_people_png(tmp_path / "people.png", image, np.zeros((0, 17, 3)), scores=np.zeros(0))
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], image)
    # A model that finds nobody: flat heatmaps, no people drawn on the first panel.
    debug = save_debug_png(tmp_path / "debug.png", image, np.zeros((6, 8, 17)), np.zeros((6, 8, 17)),
                           np.zeros((0, 17, 3)))
    assert cv2.imread(str(debug)) is not None


def test_wrong_person_shape_is_still_refused():
    with pytest.raises(ValueError, match=r"\[P, 17, 3\]; got shape \(1, 5, 3\)"):
        draw_people(_image(), np.zeros((1, 5, 3)))
