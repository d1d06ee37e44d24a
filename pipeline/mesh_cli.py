"""``ffhq-uv mesh ...``: the mesh tools shipped with the dataset (pipeline.md section 7).

    ffhq-uv mesh add-eyeballs HEAD.obj OUT_DIR --eyeball-dir D
    ffhq-uv mesh flame-uv FLAME.obj OUT.obj --reference FLAME_w_HIFI3D_UV.obj [--texture UV.png] [--eyeball-dir D]
    ffhq-uv mesh preview MESH.obj UV.png OUT.png [--eyeballs DIR] [--size N]

``add_mesh_subcommands`` plugs these into the main CLI's subparsers; ``python -m pipeline.mesh_cli mesh ...``
runs them on their own. Errors a user can fix (bad mesh, missing file) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2
EYEBALL_DIR_HELP = (
    "folder with FFHQ-UV's template eyeballs (eyeLeft_mesh_move.obj, eyeRight_mesh_move.obj, eye_ball_tex.png), "
    "from csbhr/FFHQ-UV Mesh_Add_EyeBall/eye_ball_assets"
)


def add_mesh_subcommands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``mesh`` command and its tools to ``subparsers``; returns the ``mesh`` parser."""
    mesh = subparsers.add_parser("mesh", help="mesh tools: eyeballs for HiFi3D++ heads, HiFi3D++ UVs on FLAME")
    tools = mesh.add_subparsers(dest="mesh_command", required=True)

    eyes = tools.add_parser("add-eyeballs", help="place template eyeballs into a HiFi3D++ head's eye sockets")
    eyes.add_argument("head", metavar="HEAD.obj", help="HiFi3D++ head mesh (20,481 vertices)")
    eyes.add_argument("out_dir", metavar="OUT_DIR", help="folder for L_ball.obj, R_ball.obj, MTL and texture")
    eyes.add_argument("--eyeball-dir", required=True, help=EYEBALL_DIR_HELP)
    eyes.set_defaults(mesh_run=_add_eyeballs)

    flame = tools.add_parser("flame-uv", help="give a FLAME mesh the HiFi3D++ UVs of FFHQ-UV maps")
    flame.add_argument("flame", metavar="FLAME.obj", help="FLAME mesh (5,023 vertices)")
    flame.add_argument("out", metavar="OUT.obj", help="output OBJ; its MTL is written beside it")
    flame.add_argument("--reference", required=True, metavar="REF.obj",
                       help="FLAME_w_HIFI3D_UV.obj from csbhr/FFHQ-UV FLAME_Apply_HIFI3D_UV/flame2hifi3d_assets")
    flame.add_argument("--texture", metavar="UV.png",
                       help="UV map the MTL uses (copied beside the OBJ); default: the MTL names uv.png")
    flame.add_argument("--eyeball-dir", help=EYEBALL_DIR_HELP + "; its eye_ball_tex.png textures FLAME's eyeballs")
    flame.set_defaults(mesh_run=_flame_uv)

    preview = tools.add_parser("preview", help="render a textured mesh from the front and +-45 degrees as PNG")
    preview.add_argument("mesh", metavar="MESH.obj", help="mesh with texture coordinates")
    preview.add_argument("uv_map", metavar="UV.png", help="UV map for the mesh's (first) material")
    preview.add_argument("out", metavar="OUT.png")
    preview.add_argument("--eyeballs", metavar="DIR",
                         help="folder with the eyeballs to render with it: 'mesh add-eyeballs' output (L_ball.obj, "
                              "R_ball.obj) or a fitted sample's folder (<mesh>_L_ball.obj, <mesh>_R_ball.obj)")
    preview.add_argument("--size", type=_view_size, default=512, help="pixels per view (default 512)")
    preview.set_defaults(mesh_run=_preview)
    return mesh


def _view_size(text: str) -> int:
    """argparse type: a view side of at least 16 pixels."""
    size = int(text)
    if size < 16:
        raise argparse.ArgumentTypeError("must be at least 16 pixels")
    return size


def run_mesh_command(args: argparse.Namespace) -> int:
    """Run the mesh tool chosen on the command line; returns the exit status."""
    return args.mesh_run(args)


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types that mean bad input (print one line, exit 2) rather than a bug."""
    from stages.errors import SampleError
    from stages.geometry.mesh_topology import TopologyError
    from stages.geometry.obj import ObjError

    return (ObjError, TopologyError, SampleError, FileNotFoundError, IsADirectoryError, PermissionError)


def _add_eyeballs(args: argparse.Namespace) -> int:
    from stages.mesh_tools.eyeballs import add_eyeballs

    for path in add_eyeballs(args.head, args.out_dir, args.eyeball_dir):
        print(path)
    return 0


def _flame_uv(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stages.mesh_tools.eyeballs import TEXTURE_FILE
    from stages.mesh_tools.flame_uv import flame_uv

    eyeball_texture = Path(args.eyeball_dir) / TEXTURE_FILE if args.eyeball_dir else None
    for path in flame_uv(args.flame, args.out, args.reference, args.texture, eyeball_texture):
        print(path)
    return 0


def _preview(args: argparse.Namespace) -> int:
    from stages.mesh_tools.preview import preview

    preview(args.mesh, args.uv_map, args.out, args.eyeballs, size=args.size)
    print(args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m pipeline.mesh_cli mesh <tool> ...``."""
    parser = argparse.ArgumentParser(prog="ffhq-uv")
    add_mesh_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return run_mesh_command(args)
    except user_errors() as error:
        print(f"ffhq-uv: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
