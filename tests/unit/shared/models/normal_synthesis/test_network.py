"""The SPADE generator: shapes, anatomy dependence, the residual's sign, rebuilding from weights."""

from __future__ import annotations

import dataclasses
import io
import json

import torch

from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.models.normal_synthesis.network import (
    SPADE,
    AnatomyConditionedGenerator,
    AnatomyEmbedding,
    SpadeConfig,
    anatomy_conditioned_twin,
    normal_synthesizer_from_weights,
    one_hot_anatomy,
)
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig

TINY = SpadeConfig(input_size=32, channels=(4, 8, 8), n_blocks=1, hidden=4)


def _generator(config: SpadeConfig = TINY, seed: int = 0) -> AnatomyConditionedGenerator:
    torch.manual_seed(seed)
    model = AnatomyConditionedGenerator(config).eval()
    with torch.no_grad():  # a clearly non-zero residual (an untrained generator is near the identity)
        model.head.conv.weight.normal_(std=0.3)
        model.head.conv.bias.fill_(0.5)
    return model


def _inputs(n: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(n, 1, size, size, generator=generator)
    anatomy = torch.randint(0, NUM_ANATOMY_CLASSES, (n, size, size), generator=generator)
    return image, anatomy


def test_twin_has_the_image_shape_and_range():
    image, anatomy = _inputs()
    twin = _generator()(image, anatomy)
    assert twin.shape == image.shape
    assert twin.min() >= 0.0 and twin.max() <= 1.0


def test_spade_modulation_follows_the_anatomy_map():
    torch.manual_seed(0)
    spade, embed = SPADE(6, 4), AnatomyEmbedding(NUM_ANATOMY_CLASSES, 4)
    x = torch.randn(1, 6, 16, 16)
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    changed = labels.clone()
    changed[:, :, 8:] = 3  # the right half becomes "heart"
    out = spade(x, embed(one_hot_anatomy(labels, NUM_ANATOMY_CLASSES), x.shape[-2:]))
    out_changed = spade(x, embed(one_hot_anatomy(changed, NUM_ANATOMY_CLASSES), x.shape[-2:]))
    difference = (out - out_changed).abs().sum(dim=(0, 1))
    assert difference[:, 10:].min() > 0  # modulated where the map changed...
    torch.testing.assert_close(difference[:, :6], torch.zeros(16, 6))  # ...and not beyond the 3x3 reach


def test_generator_output_depends_on_the_anatomy_map():
    image, anatomy = _inputs()
    model = _generator()
    assert not torch.allclose(model(image, anatomy), model(image, (anatomy + 1) % NUM_ANATOMY_CLASSES))


def test_the_default_twin_changes_either_way_and_a_negative_one_only_removes_density():
    image, anatomy = _inputs()
    twin = _generator(dataclasses.replace(TINY, negative_residual=True))(image, anatomy)
    assert (twin <= image).all()
    assert (twin < image).any()
    unconstrained = _generator()(image, anatomy)
    assert (unconstrained > image).any()


def test_rebuild_from_published_config_and_weights():
    model = _generator()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    config = json.loads(json.dumps(TINY.to_dict()))  # what the registry stores
    rebuilt = normal_synthesizer_from_weights(config, buffer.getvalue())
    assert rebuilt.config == TINY
    image, anatomy = _inputs()
    torch.testing.assert_close(rebuilt(image, anatomy), model(image, anatomy))


def test_full_resolution_twin_is_conditioned_on_the_segmenters_map():
    segmenter = AnatomySegmenter(SegmenterConfig(input_size=64, channels=(4, 8))).eval()
    image, _ = _inputs(size=64)
    twin = anatomy_conditioned_twin(_generator(dataclasses.replace(TINY, negative_residual=True)), segmenter, image)
    assert twin.shape == image.shape
    assert (twin <= image).all() and (twin < image).any(), "a one-signed change stays one-signed at full resolution"
