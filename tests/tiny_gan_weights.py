"""Tiny random-weight GAN checkpoints written in each official file format, for tests.

The networks are the project's own classes at small sizes; the writers produce the
structure of the official files (TF StyleGAN2 pickle, stylegan2-ada-pytorch pickle,
rosinality ``.pt``, e4e ``.pt``, StyleFlow state dict) by inverting the key tables of
networks.md, so that the loaders read them with exactly the code that reads the real files.
``write_weights_dir`` lays them out under FFHQ-UV's file names.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stages.networks.e4e import Encoder4Editing, EncoderConfig
from stages.networks.styleflow import StyleFlow
from stages.networks.stylegan2 import Generator, GeneratorConfig, channels_config_f, fir_filter

TINY_W_DIM = 64  # the tiny pipeline's latent width (e4e's last backbone depth must equal it)
TINY_RESOLUTION = 1024  # 18 W+ rows, as FFHQ-UV's edit layer ranges require
TINY_ENCODER_STAGES = ((1, 16), (1, 32), (2, 48), (1, TINY_W_DIM))  # (units, depth): depths differ per stage

E4E_FILE = "e4e_model/e4e_ffhq_encode.pt"
TF_PICKLE_FILE = "stylegan_model/stylegan2-ffhq-config-f.pkl"
STYLEFLOW_FILE = "styleflow_model/modellarge10k.pt"
EXPRESSION_FILE = "styleflow_model/expression_direction.pt"


# ----------------------------------------------------------------------------- tiny networks

def tiny_generator_config(w_dim: int = TINY_W_DIM, resolution: int = TINY_RESOLUTION,
                          min_channels: int = 1) -> GeneratorConfig:
    """Config-f structure with few channels: 16 up to 128 px, halving after, at least ``min_channels``."""
    channels = {r: max(c, min_channels)
                for r, c in channels_config_f(resolution, channel_base=2048, channel_max=16).items()}
    return GeneratorConfig(w_dim, w_dim, resolution, tuple(sorted(channels.items())), mapping_layers=8)


def randomize_(module: nn.Module, seed: int, scale: float = 0.1) -> nn.Module:
    """Give every parameter and buffer a seeded non-trivial value (biases, gains and noise included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("resample_filter") or name.endswith("_num_evals") or name.endswith("step"):
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith("running_var"):
                tensor.copy_(1.0 + scale * noise.abs())
            elif name.endswith("affine.bias"):
                tensor.copy_(1.0 + scale * noise)
            elif name.endswith("sqrt_end_time"):
                tensor.fill_(0.7)
            elif tensor.ndim <= 1 or name.endswith("noise_strength"):
                tensor.copy_(scale * noise)
            else:
                tensor.copy_(noise * (tensor.std() if tensor.numel() > 1 and tensor.std() > 0 else 1.0))
    return module


def tiny_generator(seed: int = 0, w_dim: int = TINY_W_DIM, resolution: int = TINY_RESOLUTION,
                   min_channels: int = 1) -> Generator:
    """A random-weight generator of the tiny configuration (eval mode)."""
    torch.manual_seed(seed)
    config = tiny_generator_config(w_dim, resolution, min_channels)
    return randomize_(Generator(config), seed).eval().requires_grad_(False)


def tiny_encoder(seed: int = 0, w_dim: int = TINY_W_DIM, n_styles: int = 18, input_size: int = 256,
                 stages: tuple[tuple[int, int], ...] = TINY_ENCODER_STAGES) -> Encoder4Editing:
    """A random-weight e4e of IR-SE structure with few units and channels (eval mode)."""
    heads = EncoderConfig.ir_se50(n_styles, input_size).head_convs
    stages = stages[:-1] + ((stages[-1][0], w_dim),)
    torch.manual_seed(seed)
    encoder = Encoder4Editing(EncoderConfig(stages, n_styles, w_dim, heads))
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.8, 1.2)
                module.weight.uniform_(0.8, 1.2)
                module.bias.normal_(0, 0.1)
    return encoder.eval().requires_grad_(False)


def tiny_flow(seed: int = 0, dim: int = TINY_W_DIM, hidden: tuple[int, ...] = (32, 32)) -> StyleFlow:
    """A random-weight StyleFlow with the official structure and small hidden widths."""
    torch.manual_seed(seed)
    flow = StyleFlow(dim, hidden)
    randomize_(flow, seed, scale=0.05)
    with torch.no_grad():
        # keep the random dynamics gentle so dopri5 takes few steps
        for layer in flow.chain[1].odefunc.diffeq.layers:
            weight = layer._layer.weight
            weight.mul_(0.5 / max(weight.std().item(), 1e-6) / weight.shape[1] ** 0.5)
    return flow.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- format writers

@contextlib.contextmanager
def _fake_modules(names: dict[str, dict[str, object]]) -> Iterator[None]:
    """Temporarily register modules (e.g. ``dnnlib.tflib.network``) so pickle can name their globals."""
    added = []
    try:
        for module_name, members in names.items():
            module = types.ModuleType(module_name)
            for attr, value in members.items():
                setattr(module, attr, value)
                if isinstance(value, type) or callable(value):
                    value.__module__ = module_name
                    value.__qualname__ = attr
            if module_name not in sys.modules:
                sys.modules[module_name] = module
                added.append(module_name)
        yield
    finally:
        for module_name in added:
            del sys.modules[module_name]


class _TFNetwork:
    """Pickles like ``dnnlib.tflib.network.Network`` (state dict via __getstate__)."""

    def __init__(self, state: dict):
        self._state = state

    def __getstate__(self) -> dict:
        return self._state


def _tf_net(name: str, variables: dict[str, np.ndarray], components: dict | None = None,
            **kwargs: object) -> _TFNetwork:
    return _TFNetwork({"version": 4, "name": name, "static_kwargs": dict(kwargs), "components": components or {},
                       "build_module_src": "# networks_stylegan2.py source text\n", "build_func_name": f"{name}_fn",
                       "variables": list(variables.items())})


def tf_variables(generator: Generator) -> dict[str, dict[str, np.ndarray]]:
    """Canonical weights -> TF variable names per component ('G_main', 'G_mapping', 'G_synthesis')."""
    sd = {k: v.detach().float().numpy() for k, v in generator.state_dict().items()}
    mapping = {}
    for i in range(generator.config.mapping_layers):
        mapping[f"Dense{i}/weight"] = sd[f"mapping.fc{i}.weight"].T.copy()
        mapping[f"Dense{i}/bias"] = sd[f"mapping.fc{i}.bias"]
    synthesis: dict[str, np.ndarray] = {}
    layers = generator.synthesis.noise_layers()
    names = {id(layer): f"noise{i}" for i, layer in enumerate(layers)}
    noise_vars: dict[str, np.ndarray] = {}

    def modulated(scope: str, key: str, flip: bool = False) -> None:
        weight = sd[f"{key}.weight"].transpose(2, 3, 1, 0)  # (out,in,kh,kw) -> (kh,kw,in,out)
        synthesis[f"{scope}/weight"] = (weight[::-1, ::-1] if flip else weight).copy()
        synthesis[f"{scope}/mod_weight"] = sd[f"{key}.affine.weight"].T.copy()
        synthesis[f"{scope}/mod_bias"] = sd[f"{key}.affine.bias"] - 1.0
        synthesis[f"{scope}/bias"] = sd[f"{key}.bias"]

    for block in generator.synthesis.blocks():
        r = block.resolution
        b = f"synthesis.b{r}"
        if block.is_first:
            synthesis["4x4/Const/const"] = sd[f"{b}.const"][None]
        convs = [("conv1", "4x4/Conv", False)] if block.is_first else [
            ("conv0", f"{r}x{r}/Conv0_up", True), ("conv1", f"{r}x{r}/Conv1", False)]
        for name, scope, flip in convs:
            modulated(scope, f"{b}.{name}", flip)
            synthesis[f"{scope}/noise_strength"] = np.float32(sd[f"{b}.{name}.noise_strength"])
            noise_vars[names[id(getattr(block, name))]] = sd[f"{b}.{name}.noise_const"][None, None]
        modulated(f"{r}x{r}/ToRGB", f"{b}.torgb")
    # TF creates the noise variables first, then 'lod', then the layers.
    ordered = {f"noise{i}": noise_vars[f"noise{i}"] for i in range(len(layers))}
    ordered["lod"] = np.float32(0.0)
    ordered.update(synthesis)
    return {"G_main": {"dlatent_avg": sd["mapping.w_avg"]}, "G_mapping": mapping, "G_synthesis": ordered}


def write_tf_pickle(path: str | Path, generator: Generator,
                    extra_variables: dict[str, dict[str, np.ndarray]] | None = None) -> None:
    """Write ``(G, D, Gs)`` like NVlabs/stylegan2's ``stylegan2-ffhq-config-f.pkl``.

    ``extra_variables`` adds variables per component ('G_main', 'G_mapping', 'G_synthesis'), as pickles
    saved by other tools carry (a top-level ``truncation_psi`` scalar, for example).
    """
    tf = tf_variables(generator)
    for component, variables in (extra_variables or {}).items():
        tf[component].update(variables)
    kwargs = dict(resolution=generator.config.resolution, fmap_base=16384, architecture="skip")

    def gs(name: str) -> _TFNetwork:
        return _tf_net(name, tf["G_main"], {"mapping": _tf_net("G_mapping", tf["G_mapping"], dlatent_size=512),
                                            "synthesis": _tf_net("G_synthesis", tf["G_synthesis"], **kwargs)},
                       **kwargs)

    d = _tf_net("D", {"Output/weight": np.ones((4, 1), np.float32)}, resolution=generator.config.resolution)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with _fake_modules({"dnnlib": {}, "dnnlib.tflib": {}, "dnnlib.tflib.network": {"Network": _TFNetwork}}):
        with open(path, "wb") as handle:
            pickle.dump((gs("G"), d, gs("Gs")), handle, protocol=3)


class _EasyDict(dict):
    """Pickles as ``dnnlib.util.EasyDict``."""


def _reconstruct_persistent_obj(meta: dict) -> None:  # pragma: no cover - only named in pickles
    raise RuntimeError("writer-side placeholder for torch_utils.persistence._reconstruct_persistent_obj")


class _Persistent:
    """Pickles like a stylegan2-ada-pytorch persistent object."""

    def __init__(self, class_name: str, state: dict):
        self.meta = {"type": "class", "version": 6, "module_src": "# training/networks.py source text\n",
                     "class_name": class_name, "state": state}

    def __reduce__(self) -> tuple:
        return (_reconstruct_persistent_obj, (self.meta,))


def _persistent_tree(module: nn.Module, class_name: str) -> _Persistent:
    params = OrderedDict((k, v) for k, v in module._parameters.items())
    buffers = OrderedDict((k, v) for k, v in module._buffers.items())
    children = OrderedDict((k, _persistent_tree(v, type(v).__name__)) for k, v in module._modules.items())
    state = {"training": False, "_parameters": params, "_buffers": buffers, "_modules": children,
             "_forward_hooks": OrderedDict(), "_init_args": (), "_init_kwargs": _EasyDict()}
    return _Persistent(f"training.networks.{class_name}", state)


def write_ada_pickle(path: str | Path, generator: Generator) -> None:
    """Write a stylegan2-ada-pytorch network pickle (``G``, ``D``, ``G_ema``, ...) holding ``generator``."""
    # ADA's FullyConnectedLayer calls its layers fc0..; our module names match, so the tree maps 1:1.
    g = _persistent_tree(generator, "Generator")
    g.meta["state"]["_init_kwargs"] = _EasyDict(z_dim=generator.config.z_dim, w_dim=generator.config.w_dim,
                                                img_resolution=generator.config.resolution, c_dim=0)
    d = _Persistent("training.networks.Discriminator", {"_parameters": OrderedDict(), "_buffers": OrderedDict(),
                                                         "_modules": OrderedDict()})
    data = {"training_set_kwargs": _EasyDict(resolution=generator.config.resolution), "G": g, "D": d, "G_ema": g,
            "augment_pipe": None}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    modules = {"dnnlib": {}, "dnnlib.util": {"EasyDict": _EasyDict}, "torch_utils": {},
               "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj}}
    with _fake_modules(modules):
        with open(path, "wb") as handle:
            pickle.dump(data, handle, protocol=4)


def rosinality_state_dict(generator: Generator) -> dict[str, torch.Tensor]:
    """Canonical weights -> rosinality ``g_ema`` keys (networks.md 1.4), FIR kernel buffers included."""
    sd = {k: v.detach().float().clone() for k, v in generator.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for i in range(generator.config.mapping_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    kernel = fir_filter() * 4  # rosinality's make_kernel(...) * factor**2

    def modulated(scope: str, key: str) -> None:
        out[f"{scope}.conv.weight"] = sd[f"{key}.weight"][None]
        out[f"{scope}.conv.modulation.weight"] = sd[f"{key}.affine.weight"]
        out[f"{scope}.conv.modulation.bias"] = sd[f"{key}.affine.bias"]

    def styled(scope: str, key: str, noise_index: int, up: bool) -> None:
        modulated(scope, key)
        if up:
            out[f"{scope}.conv.blur.kernel"] = kernel.clone()
        out[f"{scope}.noise.weight"] = sd[f"{key}.noise_strength"].reshape(1)
        out[f"{scope}.activate.bias"] = sd[f"{key}.bias"]
        out[f"noises.noise_{noise_index}"] = sd[f"{key}.noise_const"][None, None]

    for k, block in enumerate(generator.synthesis.blocks()):
        b = f"synthesis.b{block.resolution}"
        if block.is_first:
            out["input.input"] = sd[f"{b}.const"][None]
            styled("conv1", f"{b}.conv1", 0, up=False)
            rgb = "to_rgb1"
        else:
            styled(f"convs.{2 * k - 2}", f"{b}.conv0", 2 * k - 1, up=True)
            styled(f"convs.{2 * k - 1}", f"{b}.conv1", 2 * k, up=False)
            rgb = f"to_rgbs.{k - 1}"
            out[f"{rgb}.upsample.kernel"] = kernel.clone()
        modulated(rgb, f"{b}.torgb")
        out[f"{rgb}.bias"] = sd[f"{b}.torgb.bias"].reshape(1, 3, 1, 1)
    return out


def write_rosinality(path: str | Path, generator: Generator) -> None:
    """Write ``{'g_ema': state_dict, 'latent_avg': (w_dim,)}`` like rosinality's converted checkpoints."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"g_ema": rosinality_state_dict(generator), "latent_avg": generator.mapping.w_avg.clone()}, path)


def write_e4e(path: str | Path, encoder: Encoder4Editing, decoder: Generator,
              latent_avg: torch.Tensor | None = None) -> torch.Tensor:
    """Write an e4e checkpoint (``state_dict`` with prefixes, ``opts``, ``latent_avg`` [n_styles, w_dim])."""
    if latent_avg is None:
        latent_avg = decoder.mapping.w_avg[None].repeat(decoder.num_ws, 1).clone()
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in rosinality_state_dict(decoder).items()})
    opts = {"encoder_type": "Encoder4Editing", "stylegan_size": decoder.config.resolution,
            "start_from_latent_avg": True, "device": "cuda:0", "checkpoint_path": None, "lpips_lambda": 0.8}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "opts": opts, "latent_avg": latent_avg}, path)
    return latent_avg


def write_styleflow(path: str | Path, flow: StyleFlow) -> None:
    """Write a StyleFlow state dict like ``modellarge10k.pt``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(flow.state_dict(), path)


def expression_direction(seed: int = 0, w_dim: int = TINY_W_DIM) -> torch.Tensor:
    """The smile direction ``write_weights_dir(seed=seed)`` writes: a seeded unit (1, w_dim) tensor."""
    direction = torch.randn(1, w_dim, generator=torch.Generator().manual_seed(seed + 3))
    return direction / direction.norm()


def write_weights_dir(weights_dir: str | Path, seed: int = 0, w_dim: int = TINY_W_DIM,
                      resolution: int = TINY_RESOLUTION, min_channels: int = 1,
                      prepare_generator: Callable[[Generator], object] | None = None,
                      prepare_flow: Callable[[StyleFlow], object] | None = None) -> dict[str, Path]:
    """Write the tiny GAN checkpoints under FFHQ-UV's file names; returns name -> path.

    One generator is written twice, as the e4e decoder and as the TF pickle, as FFHQ-UV
    uses the same config-f weights in steps 1 and 3. ``prepare_generator`` and ``prepare_flow``
    may change the generator and the flow in place before they are written (e.g.
    ``tests.face_drawing_gan``); ``min_channels`` widens the generator's high resolutions.
    """
    root = Path(weights_dir)
    generator = tiny_generator(seed, w_dim, resolution, min_channels)
    if prepare_generator is not None:
        prepare_generator(generator)
    flow = tiny_flow(seed + 2, w_dim)
    if prepare_flow is not None:
        prepare_flow(flow)
    encoder = tiny_encoder(seed + 1, w_dim, generator.num_ws)
    paths = {"e4e": root / E4E_FILE, "stylegan": root / TF_PICKLE_FILE, "styleflow": root / STYLEFLOW_FILE,
             "expression_direction": root / EXPRESSION_FILE}
    write_e4e(paths["e4e"], encoder, generator)
    write_tf_pickle(paths["stylegan"], generator)
    write_styleflow(paths["styleflow"], flow)
    torch.save(expression_direction(seed, w_dim), paths["expression_direction"])
    return paths
