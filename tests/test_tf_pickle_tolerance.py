"""The TF StyleGAN2 loader skips unused top-level settings of ``Gs`` and still refuses unknown weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.errors import CheckpointError
from stages.networks.stylegan2 import load_generator
from tests import tiny_gan_weights as tiny


@pytest.fixture(scope="module")
def generator():
    return tiny.tiny_generator(seed=3, w_dim=16, resolution=16)


def _image(generator, seed: int = 0) -> torch.Tensor:
    w = torch.randn(2, generator.num_ws, generator.config.w_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return generator.synthesis(w)


@pytest.mark.parametrize("extra", [
    {"G_main": {"truncation_psi": np.float32(0.7)}},
    {"G_main": {"truncation_psi": np.float32(0.5), "truncation_cutoff": np.array([8], np.int32),
                "lod": np.float32(0.0)}},
])
def test_unused_top_level_settings_are_ignored(tmp_path, generator, extra):
    path = tmp_path / "g.pkl"
    tiny.write_tf_pickle(path, generator, extra_variables=extra)
    loaded = load_generator(str(path))
    assert torch.equal(_image(loaded), _image(generator))


@pytest.mark.parametrize("extra, named", [
    ({"G_mapping": {"Dense0/scale": np.ones((16,), np.float32)}}, "mapping/Dense0/scale"),
    ({"G_synthesis": {"16x16/Conv2/weight": np.ones((3, 3, 4, 4), np.float32)}}, "synthesis/16x16/Conv2/weight"),
    ({"G_synthesis": {"truncation_psi": np.float32(0.7)}}, "synthesis/truncation_psi"),
    ({"G_main": {"style_mixing_weight": np.ones((16, 16), np.float32)}}, "style_mixing_weight"),
])
def test_unknown_weights_are_still_refused(tmp_path, generator, extra, named):
    path = tmp_path / "g.pkl"
    tiny.write_tf_pickle(path, generator, extra_variables=extra)
    with pytest.raises(CheckpointError, match=named):
        load_generator(str(path))
