import io

import torch

from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig, segmenter_from_weights


def test_logits_shape_and_exposure_invariance():
    model = AnatomySegmenter(SegmenterConfig(input_size=32, channels=(4, 8))).eval()
    image = torch.rand(2, 1, 32, 32)
    logits = model(image)
    assert logits.shape == (2, NUM_ANATOMY_CLASSES, 32, 32)
    # standardisation inside the module: a global exposure change does not change the answer
    torch.testing.assert_close(model(image * 0.5 + 0.2), logits, atol=1e-4, rtol=1e-4)


def test_rebuild_from_published_config_and_weights():
    config = SegmenterConfig(input_size=32, channels=(4, 8))
    model = AnatomySegmenter(config).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    rebuilt = segmenter_from_weights(config.to_dict(), buffer.getvalue())
    image = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(rebuilt(image), model(image))
