"""StyleFlow's conditional CNF on W+ vectors and FFHQ-UV's attribute-edit primitive (networks.md section 3).

``SequentialFlow(MovingBatchNorm1d, CNF, MovingBatchNorm1d)`` with a ConcatSquashLinear ODE
net, learnable end time ``sqrt_end_time**2`` and dopri5 (torchdiffeq). Module names match
``modellarge10k.pt`` so the official state dict loads strictly. The log-density state of the
original is not integrated: the edits use only w <-> z, and networks.md allows integrating
y alone with the condition held fixed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from stages.condition import ATTRIBUTE_INDEX, LIGHT, VECTOR_SIZE
from stages.errors import CheckpointError
from stages.networks.checkpoint import load_strict

BN_EPS = 1e-4  # StyleFlow's MovingBatchNorm1d eps
ODE_TOLERANCE = 1e-5  # StyleFlow's atol = rtol for dopri5

# The W+ rows each edit replaces, inclusive (FFHQ-UV run_styleflow_editing.py, the original StyleFlow UI's
# ranges); the condition's indices are ``stages.condition``'s.
EDIT_LAYERS = {"Light": (7, 11), "Gender": (0, 7), "Glasses": (2, 3), "Yaw": (0, 3), "Pitch": (0, 3),
               "Baldness": (0, 5), "Beard": (5, 9), "Age": (4, 7), "Expression": (0, 17)}


class MovingBatchNorm1d(nn.Module):
    """Eval-mode moving batch norm over the last axis, exactly invertible: y = (x-m)/sqrt(v+eps)*exp(g) + b."""

    def __init__(self, num_features: int, eps: float = BN_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("step", torch.zeros(1))

    def forward(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        scale = torch.rsqrt(self.running_var + self.eps) * torch.exp(self.weight)
        if reverse:
            return (x - self.bias) / scale + self.running_mean
        return (x - self.running_mean) * scale + self.bias


class ConcatSquashLinear(nn.Module):
    """``Linear(x) * sigmoid(hyper_gate(ctx)) + hyper_bias(ctx)``; ctx (B, 1 + attributes)."""

    def __init__(self, dim_in: int, dim_out: int, dim_ctx: int):
        super().__init__()
        self._layer = nn.Linear(dim_in, dim_out)
        self._hyper_bias = nn.Linear(dim_ctx, dim_out, bias=False)
        self._hyper_gate = nn.Linear(dim_ctx, dim_out)

    def forward(self, ctx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self._hyper_gate(ctx))[:, None]  # x is (B, rows, dim): all rows share ctx
        return self._layer(x) * gate + self._hyper_bias(ctx)[:, None]


class ODEnet(nn.Module):
    """ConcatSquashLinear layers with tanh between them (none after the last)."""

    def __init__(self, dims: list[int], dim_ctx: int):
        super().__init__()
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b, dim_ctx) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, ctx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            y = layer(ctx, y)
            if i < len(self.layers) - 1:
                y = torch.tanh(y)
        return y


class ODEfunc(nn.Module):
    """dy/dt = diffeq([t, c], y); ``_num_evals`` counts function evaluations (a checkpoint buffer)."""

    def __init__(self, diffeq: ODEnet):
        super().__init__()
        self.diffeq = diffeq
        self.register_buffer("_num_evals", torch.tensor(0.0))
        self.condition: Optional[torch.Tensor] = None

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._num_evals += 1
        c = self.condition
        ctx = torch.cat([t.to(y).expand(c.shape[0], 1), c], dim=1)
        return self.diffeq(ctx, y)


class CNF(nn.Module):
    """Continuous normalising flow over [0, T], T = sqrt_end_time**2, solved with dopri5."""

    def __init__(self, odefunc: ODEfunc, end_time: float = 1.0, tolerance: float = ODE_TOLERANCE):
        super().__init__()
        self.odefunc = odefunc
        self.sqrt_end_time = nn.Parameter(torch.sqrt(torch.tensor(end_time)))
        self.tolerance = tolerance

    def forward(self, y: torch.Tensor, condition: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        from torchdiffeq import odeint

        end = (self.sqrt_end_time * self.sqrt_end_time).to(y)
        times = torch.stack([end, torch.zeros_like(end)]) if reverse else torch.stack([torch.zeros_like(end), end])
        self.odefunc.condition = condition.to(y)
        try:
            return odeint(self.odefunc, y, times, atol=self.tolerance, rtol=self.tolerance, method="dopri5")[-1]
        finally:
            self.odefunc.condition = None


class StyleFlow(nn.Module):
    """``chain = [MovingBatchNorm1d, CNF, MovingBatchNorm1d]``: w (B, rows, dim) <-> z given attributes (B, 17)."""

    def __init__(self, dim: int = 512, hidden: tuple[int, ...] = (512,) * 5, num_attributes: int = VECTOR_SIZE):
        super().__init__()
        self.dim = dim
        self.num_attributes = num_attributes
        diffeq = ODEnet([dim, *hidden, dim], 1 + num_attributes)
        self.chain = nn.ModuleList([MovingBatchNorm1d(dim), CNF(ODEfunc(diffeq)), MovingBatchNorm1d(dim)])

    def forward(self, x: torch.Tensor, attributes: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """Forward w -> z, or reverse z -> w. x (B, rows, dim); attributes (B, 17) or (B, 17, 1, 1)."""
        condition = attributes.reshape(attributes.shape[0], -1)
        assert condition.shape[1] == self.num_attributes and x.shape[-1] == self.dim
        order = reversed(list(self.chain)) if reverse else list(self.chain)
        for module in order:
            x = module(x, condition, reverse=reverse) if isinstance(module, CNF) else module(x, reverse=reverse)
        return x


def flow_from_state_dict(state: dict[str, torch.Tensor]) -> StyleFlow:
    """Build a StyleFlow with the shapes of ``state`` (``modellarge10k.pt`` keys) and load it strictly."""
    prefix = "chain.1.odefunc.diffeq.layers."
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)\._layer\.weight")
    layer_ids = sorted({int(m.group(1)) for k in state if (m := pattern.fullmatch(k))})
    if not layer_ids:
        raise CheckpointError("not a StyleFlow state dict: no chain.1.odefunc.diffeq.layers.*")
    widths = [state[f"{prefix}{i}._layer.weight"].shape[0] for i in layer_ids]
    dim = state[f"{prefix}0._layer.weight"].shape[1]
    num_attributes = state[f"{prefix}0._hyper_gate.weight"].shape[1] - 1
    flow = StyleFlow(dim, tuple(widths[:-1]), num_attributes)
    expected = flow.state_dict()
    for key, value in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            # the scalar buffers may be saved as [] or [1] depending on the torch version
            if expected[key].numel() == value.numel() == 1:
                state = {**state, key: value.reshape(expected[key].shape)}
            else:
                raise CheckpointError(f"StyleFlow shape mismatch at {key}: expected {tuple(expected[key].shape)}, "
                                      f"got {tuple(value.shape)}")
    return load_strict(flow, state, "StyleFlow")


def load_styleflow(path: str) -> StyleFlow:
    """Load ``modellarge10k.pt`` (a plain state dict) with ``weights_only``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a StyleFlow state dict")
    return flow_from_state_dict({k: v.float() for k, v in state.items()})


@dataclass
class EditState:
    """The current W+ (B, rows, dim), attributes (B, 17) and flow code z = F(w | attributes)."""

    w: torch.Tensor
    attributes: torch.Tensor
    z: torch.Tensor


class FlowEditor:
    """FFHQ-UV's StyleFlow edit primitive: set attribute values, map z back to W+, replace only their rows."""

    def __init__(self, flow: StyleFlow):
        self.flow = flow

    @torch.no_grad()
    def start(self, w: torch.Tensor, attributes: torch.Tensor) -> EditState:
        """Encode the initial state: w (B, rows, dim), attributes (B, 17)."""
        return EditState(w, attributes, self.flow(w, attributes))

    @torch.no_grad()
    def edit(self, state: EditState, name: str, values: torch.Tensor, keep: bool = True) -> EditState:
        """Set attribute ``name`` ('Light' takes (B, 9) or (9,), others (B,) or scalar) and return the new state.

        With ``keep`` z is re-encoded from the new w and attributes (FFHQ-UV's keep_change);
        otherwise the returned state keeps the old z.
        """
        target = state.attributes.clone()
        index = LIGHT if name == "Light" else ATTRIBUTE_INDEX[name]
        target[:, index] = values.to(target)
        w_target = self.flow(state.z, target, reverse=True)
        w_new = replace_rows(state.w, w_target, name)
        z = self.flow(w_new, target) if keep else state.z
        return EditState(w_new, target, z)

    @torch.no_grad()
    def reencode(self, w: torch.Tensor, attributes: torch.Tensor) -> EditState:
        """State after an edit made outside the flow (the expression walk)."""
        return EditState(w, attributes, self.flow(w, attributes))


def replace_rows(current: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """Copy rows ``EDIT_LAYERS[name]`` (inclusive) of ``target`` into a copy of ``current``; (B, rows, dim)."""
    first, last = EDIT_LAYERS[name]
    out = current.clone()
    out[:, first:last + 1] = target[:, first:last + 1]
    return out
