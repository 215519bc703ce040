"""The depth encodings' edge cases by their numbers (found by mutation testing): readings outside the
sensor range, a reading of 1 mm, integer millimetres."""

import numpy as np

from crossreid.data.images import DEPTH_FAR_MM, DEPTH_NEAR_MM, depth_to_unit, encode_depth


def test_global_encoding_clips_to_the_sensor_range_and_keeps_only_zero_as_no_reading():
    mm = np.array([0.0, 1.0, 300.0, DEPTH_NEAR_MM, 2375.0, DEPTH_FAR_MM, 9000.0])
    # (8000 - clip(d, 500, 8000)) / 7500; 0 = no reading
    expected = [0.0, 1.0, 1.0, 1.0, 0.75, 0.0, 0.0]
    assert depth_to_unit(mm).tolist() == expected
    assert encode_depth(mm.reshape(1, -1), "global")[0, 0].tolist() == expected


def test_integer_millimetres_give_float32():
    mm = np.array([[0, 500, 2375, 8000]], dtype=np.uint16)
    unit = depth_to_unit(mm)
    assert unit.dtype == np.float32 and unit.tolist() == [[0.0, 1.0, 0.75, 0.0]]
    assert encode_depth(mm, "global").dtype == np.float32
