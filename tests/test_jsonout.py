import json
import math

import numpy as np

from rsgeo.jsonout import dumps


def test_strict_json_has_no_nan_and_takes_numpy():
    text = dumps({"loss": float("nan"), "inf": math.inf, "n": np.int64(3), "x": np.float32(0.5),
                  "a": np.arange(2), "t": (1, 2)})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "inf": None, "n": 3, "x": 0.5, "a": [0, 1], "t": [1, 2]}
