"""Restricted unpicklers: the real structures load; malicious pickles are refused before any side effect."""

from __future__ import annotations

import io
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from stages.networks import safe_pickle
from stages.networks import stylegan2 as sg
from tests import tiny_gan_weights as tiny


class _Shell:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _WriteFile:
    """Unpickling this would write a file through builtins.open... via exec."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _tf_pickle_with(payload: object) -> bytes:
    net = tiny._tf_net("Gs", {"dlatent_avg": np.zeros(4, np.float32), "evil": payload})
    with tiny._fake_modules({"dnnlib": {}, "dnnlib.tflib": {}, "dnnlib.tflib.network": {"Network": tiny._TFNetwork}}):
        return pickle.dumps((net, net, net), protocol=3)


def _ada_pickle_with(payload: object) -> bytes:
    g = tiny._Persistent("training.networks.Generator", {"_parameters": {"w": torch.zeros(2)}, "_buffers": {},
                                                         "_modules": {}, "evil": payload})
    with tiny._fake_modules({"torch_utils": {}, "torch_utils.persistence": {
            "_reconstruct_persistent_obj": tiny._reconstruct_persistent_obj}}):
        return pickle.dumps({"G_ema": g}, protocol=4)


@pytest.mark.parametrize("loader,make", [(safe_pickle.load_tf_pickle, _tf_pickle_with),
                                         (safe_pickle.load_ada_pickle, _ada_pickle_with)])
@pytest.mark.parametrize("attack", [_Shell, _WriteFile])
def test_malicious_payloads_are_refused_without_side_effects(tmp_path, loader, make, attack):
    marker = tmp_path / "pwned"
    data = make(attack(str(marker)))
    with pytest.raises(safe_pickle.UnsafePickleError, match="refusing to load .* references"):
        loader(io.BytesIO(data))
    assert not marker.exists()


def test_plain_pickle_of_the_payload_would_have_run(tmp_path):
    # The payload is live: the ordinary unpickler executes it, which the restricted ones refuse.
    if shutil.which("touch") is None:
        pytest.skip("no touch command")
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Shell(str(marker))))
    assert marker.exists()


def test_ada_storage_bytes_go_through_weights_only(tmp_path):
    # A serialized "storage" that is really an arbitrary pickle must not run.
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save(_Shell(str(marker)), buffer)

    class FakeStorage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (buffer.getvalue(),))

    data = pickle.dumps({"G_ema": FakeStorage()}, protocol=4)
    with pytest.raises(pickle.UnpicklingError):
        safe_pickle.load_ada_pickle(io.BytesIO(data))
    assert not marker.exists()


def test_other_globals_are_named_in_the_error():
    data = pickle.dumps({"x": io.BytesIO}, protocol=4)
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"_io\.BytesIO"):
        safe_pickle.load_tf_pickle(io.BytesIO(data))


def test_real_structures_load(tmp_path):
    g = tiny.tiny_generator(seed=0, w_dim=16, resolution=8)
    tiny.write_tf_pickle(tmp_path / "tf.pkl", g)
    tiny.write_ada_pickle(tmp_path / "ada.pkl", g)
    G, D, Gs = safe_pickle.load_tf_pickle(str(tmp_path / "tf.pkl"))
    assert isinstance(Gs, safe_pickle.TFNetworkStub) and set(Gs.components) == {"mapping", "synthesis"}
    assert Gs.components["synthesis"].name == "G_synthesis"
    assert safe_pickle.sniff_pickle_format(str(tmp_path / "tf.pkl")) == "tf"
    ada = safe_pickle.load_ada_pickle(str(tmp_path / "ada.pkl"))
    assert isinstance(ada["G_ema"], safe_pickle.PersistentStub)
    assert ada["G_ema"].class_name == "training.networks.Generator"
    assert ada["training_set_kwargs"] == {"resolution": 8}
    tensors = ada["G_ema"].tensors()
    assert set(tensors) == set(g.state_dict())
    assert safe_pickle.sniff_pickle_format(str(tmp_path / "ada.pkl")) == "ada"


def test_generator_loader_reports_refusal_for_a_malicious_checkpoint(tmp_path):
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    path.write_bytes(_tf_pickle_with(_Shell(str(tmp_path / "pwned"))))
    with pytest.raises(safe_pickle.UnsafePickleError, match="posix.system|os.system|nt.system"):
        sg.load_generator(str(path))
    assert not (tmp_path / "pwned").exists()
