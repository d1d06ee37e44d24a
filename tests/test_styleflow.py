"""StyleFlow CNF: official keys, strict loading, invertibility, edit layer ranges."""

from __future__ import annotations

import pytest
import torch

from stages.errors import CheckpointError
from stages.networks import styleflow as sf
from tests import tiny_gan_weights as tiny


def test_official_structure_has_the_modellarge10k_keys():
    with torch.device("meta"):
        flow = sf.StyleFlow()
    shapes = {k: tuple(v.shape) for k, v in flow.state_dict().items()}
    expected = {f"chain.{i}.{n}" for i in (0, 2) for n in ("weight", "bias", "running_mean", "running_var", "step")}
    expected |= {"chain.1.sqrt_end_time", "chain.1.odefunc._num_evals"}
    expected |= {f"chain.1.odefunc.diffeq.layers.{i}.{n}" for i in range(6)
                 for n in ("_layer.weight", "_layer.bias", "_hyper_bias.weight", "_hyper_gate.weight",
                           "_hyper_gate.bias")}
    assert set(shapes) == expected
    assert shapes["chain.1.odefunc.diffeq.layers.5._layer.weight"] == (512, 512)
    assert shapes["chain.1.odefunc.diffeq.layers.0._hyper_bias.weight"] == (512, 18)
    assert shapes["chain.1.odefunc.diffeq.layers.0._hyper_gate.bias"] == (512,)
    assert shapes["chain.0.running_var"] == (512,)


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> sf.StyleFlow:
    path = tmp_path_factory.mktemp("flow") / "modellarge10k.pt"
    tiny.write_styleflow(path, tiny.tiny_flow(seed=4, dim=32, hidden=(24, 24)))
    return sf.load_styleflow(str(path))


def _attributes(batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    light = torch.rand(batch, 9, generator=gen) * 0.4
    light[:, 0] = 1.0
    attrs = torch.tensor([[0.0, 0.0, 11.2, -5.6, 0.02, 0.0, 23.0, 0.65]]).repeat(batch, 1)
    return torch.cat([light, attrs], dim=1)


def test_loaded_flow_matches_the_written_one(tmp_path):
    original = tiny.tiny_flow(seed=4, dim=32, hidden=(24, 24))
    tiny.write_styleflow(tmp_path / "f.pt", original)
    loaded = sf.load_styleflow(str(tmp_path / "f.pt"))
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    w = torch.randn(1, 18, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded(w, _attributes(1)), original(w, _attributes(1)), atol=1e-6)


def test_forward_then_reverse_returns_the_input(flow):
    w = torch.randn(2, 18, 32, generator=torch.Generator().manual_seed(1))
    attributes = _attributes(2)
    with torch.no_grad():
        z = flow(w, attributes)
        back = flow(z, attributes, reverse=True)
    assert (z - w).abs().max() > 1e-2  # the flow does something
    assert (back - w).abs().max() < 1e-3


def test_the_condition_changes_the_output(flow):
    w = torch.randn(1, 18, 32, generator=torch.Generator().manual_seed(2))
    a, b = _attributes(1), _attributes(1)
    b[:, sf.ATTRIBUTE_INDEX["Yaw"]] = -30.0
    with torch.no_grad():
        assert (flow(w, a) - flow(w, b)).abs().max() > 1e-3
        assert torch.allclose(flow(w, a), flow(w, a.reshape(1, 17, 1, 1)))


def test_moving_batch_norm_is_exactly_invertible():
    bn = tiny.randomize_(sf.MovingBatchNorm1d(8), seed=0)
    x = torch.randn(3, 18, 8)
    with torch.no_grad():
        y = bn(x)
        expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + 1e-4) * torch.exp(bn.weight) + bn.bias
        assert torch.allclose(y, expected, atol=1e-6)
        assert torch.allclose(bn(y, reverse=True), x, atol=1e-5)


@pytest.mark.parametrize("name,value", [("Glasses", 0.0), ("Yaw", 30.0), ("Pitch", 0.0), ("Baldness", 1.0),
                                        ("Beard", 1.0), ("Age", 60.0), ("Gender", 1.0)])
def test_each_edit_changes_only_its_layer_range(flow, name, value):
    w = torch.randn(1, 18, 32, generator=torch.Generator().manual_seed(3))
    editor = sf.FlowEditor(flow)
    state = editor.start(w, _attributes(1))
    edited = editor.edit(state, name, torch.tensor([value]))
    first, last = sf.EDIT_LAYERS[name]
    changed = (edited.w - w).abs().amax(dim=2)[0]
    assert (changed[first:last + 1] > 1e-4).all()
    assert torch.equal(edited.w[:, :first], w[:, :first]) and torch.equal(edited.w[:, last + 1:], w[:, last + 1:])
    assert edited.attributes[0, sf.ATTRIBUTE_INDEX[name]] == value
    assert torch.allclose(edited.z, flow(edited.w, edited.attributes), atol=1e-6)  # z re-encoded (keep_change)


def test_light_edit_changes_rows_7_to_11_and_a_not_kept_edit_keeps_z(flow):
    w = torch.randn(1, 18, 32, generator=torch.Generator().manual_seed(4))
    editor = sf.FlowEditor(flow)
    state = editor.start(w, _attributes(1))
    delit = editor.edit(state, "Light", torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0, 0]))
    changed = (delit.w - w).abs().amax(dim=2)[0] > 0
    assert changed.nonzero().flatten().tolist() == list(range(7, 12))
    assert delit.attributes[0, :9].tolist() == [1.0, 0, 0, 0, 0, 0, 0, 0, 0]
    view = editor.edit(delit, "Yaw", torch.tensor([-30.0]), keep=False)
    assert view.z is delit.z


def test_mismatched_state_dict_is_refused():
    state = tiny.tiny_flow(seed=0, dim=16, hidden=(8,)).state_dict()
    with pytest.raises(CheckpointError, match="unexpected"):
        sf.flow_from_state_dict({**state, "chain.3.weight": torch.zeros(16)})
    with pytest.raises(CheckpointError, match="missing"):
        sf.flow_from_state_dict({k: v for k, v in state.items() if k != "chain.2.step"})
