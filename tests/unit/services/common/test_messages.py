"""anatomy_label_map: the LabelMap message every service returns for an anatomy map."""

from __future__ import annotations

import numpy as np

from twinray.services.common.messages import anatomy_label_map
from twinray.shared.data.anatomy import ANATOMY_CLASSES, NUM_ANATOMY_CLASSES
from twinray.shared.platform.imaging import decode_label_png


def test_label_map_round_trips_with_the_anatomy_classes() -> None:
    labels = (np.arange(30 * 50).reshape(30, 50) % NUM_ANATOMY_CLASSES).astype(np.uint8)
    message = anatomy_label_map(labels)
    assert (message.height, message.width) == (30, 50)  # height and width, not the other way round
    np.testing.assert_array_equal(decode_label_png(message.png), labels)
    assert [(c.index, c.name) for c in message.classes] == list(enumerate(ANATOMY_CLASSES))
    assert message.classes[1].name == "lung_right"
