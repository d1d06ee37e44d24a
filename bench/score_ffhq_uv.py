"""Fidelity of the unwrap + complete stages on FFHQ-UV's own three views of FFHQ 01223 (hifi3dpp topology).

Prints, from one run:

- per view the fitted (pitch, yaw, roll) in FFHQ-UV's Deep3D convention next to FFHQ-UV's own fit
  (``FFHQ_UV_ANGLES``), and the reprojection error of FFHQ-UV's own 68 landmarks of the views
  (``landmarks/01223_final_lm68_2d.pt``) by the fitted head's 68 iBUG points;
- the valid ratio of each per-view unwrap and of the merge, the BS error of the map and the mean luma of its
  UV-left and UV-right temple and jaw bands (``side_band_brightness``: shading the merge left in the map);
- the luma of bands just above and below each eye opening and of the upper lid against the cheek under the eye
  (``eye_band_luma``: lashes or corner shadow the views' eye holes left in, smeared into the closed lids);
- the map against a reference map (``--reference``, FFHQ-UV's final map of 01223, not shipped in
  ``../shared/data``): PSNR / SSIM over the texels FFHQ-UV fills from its views (``scored_texels``);
- without a reference, a proxy of the same error: the views' unwraps against each other where both are
  valid (a 6 px misregistration between two views shows here as it does against the reference);
- with ``--photo PATH`` (repeatable), the ``photo`` profile's map of that photo on the same topology (``ffhq-uv run``
  with ``--photo-override key=value`` settings added) against this script's map of FFHQ-UV's views, the photo
  profile's stand-in for FFHQ-UV's map of 01223 (issue 14), and against ``--reference`` when given.

    PYTHONPATH=. python bench/score_ffhq_uv.py [--reference MAP.png] [--pictures DIR] [--topology-obj OBJ]
        [--photo ../shared/data/ffhq_uv_example/images/01223.png [--photo-override stages.relight.method=dpr ...]]

``--pictures DIR`` writes the views with the fitted landmarks, the per-view unwraps and the final map.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
EDIT = DATA / "ffhq_uv_example" / "edit"
LM68 = DATA / "ffhq_uv_example" / "landmarks" / "01223_final_lm68_2d.pt"
HEAD_OBJ = DATA / "hifi3dpp" / "head_teaser1.obj"
VIEWS = ("left", "right", "front")

# FFHQ-UV's own Deep3D fit of these views (issue 13): (pitch, yaw, roll) in degrees.
FFHQ_UV_ANGLES: dict[str, tuple[float, float, float]] = {
    "left": (-2.19, 22.22, 0.52), "front": (0.30, -1.68, -0.66), "right": (-2.84, -23.00, -0.38)}
# Deep3D's camera frame (x right, y up, z towards the camera) from OpenCV's (x right, y down, z forward).
OPENCV_TO_DEEP3D = np.diag([1.0, -1.0, -1.0])
SSIM_SIGMA = 1.5  # Gaussian window of SSIM (Wang et al. 2004)


def read_ffhq_uv_landmarks(path: Path = LM68) -> dict[str, np.ndarray]:
    """FFHQ-UV's 68 landmarks per view as (68, 2) y-down pixels (the file stores y from the bottom, 1024 px)."""
    import torch
    from numpy.core.multiarray import _reconstruct

    # A dict of numpy arrays: allow exactly numpy's array reconstruction, nothing else.
    allowed = [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.float32)), type(np.dtype(np.float64))]
    with torch.serialization.safe_globals(allowed):
        record = torch.load(str(path), weights_only=True)
    return {view: np.stack([points[:, 0], 1023.0 - points[:, 1]], axis=1).astype(np.float64)
            for view, points in record.items()}


def deep3d_angles(pose) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees of a ViewPose in Deep3D's convention R = Rz(roll) Ry(yaw) Rx(pitch)."""
    from scipy.spatial.transform import Rotation

    roll, yaw, pitch = Rotation.from_matrix(OPENCV_TO_DEEP3D @ pose.rotation).as_euler("ZYX", degrees=True)
    return float(pitch), float(yaw), float(roll)


def lm68_error(shape_model, fit, view: str, points: np.ndarray) -> float:
    """Mean pixel distance between FFHQ-UV's 68 landmarks of a view and the fitted head's 68 iBUG points."""
    from stages.geometry.landmark_schemes import IBUG68_SCHEME

    topology = shape_model.topology
    lm468 = topology.landmark_points(fit.vertices_of(view))
    projected = fit.poses[view].project(lm468[list(IBUG68_SCHEME.from_mediapipe)])[:, :2]
    return float(np.linalg.norm(projected - points, axis=1).mean())


def deep3d_rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """(3, 3) OpenCV-frame rotation of Deep3D angles in degrees (the inverse of ``deep3d_angles``)."""
    from scipy.spatial.transform import Rotation

    return OPENCV_TO_DEEP3D @ Rotation.from_euler("ZYX", [roll, yaw, pitch], degrees=True).as_matrix()


def multiview_residual(points: dict[str, np.ndarray], rotations: dict[str, np.ndarray],
                       iterations: int = 20) -> float:
    """Mean pixel residual of the views' (L, 2) landmarks explained as one rigid, otherwise free point set.

    Scaled orthographic cameras (the views' focal is long: 12.6 degrees field of view) with the given (3, 3)
    rotations; per view a scale and a 2D shift, per landmark a 3D position, all free, solved by alternating least
    squares from a flat start. No template enters, so this says which rotations the landmarks themselves support.
    """
    views = list(points)
    shape = np.zeros((len(points[views[0]]), 3))
    shape[:, :2] = points[views[0]] * np.array([1.0, -1.0])  # a flat start, y up like the template
    for _ in range(iterations):
        cameras = {}
        for view in views:
            image = shape @ rotations[view][:2].T  # (L, 2) before scale and shift
            centred, observed = image - image.mean(0), points[view] - points[view].mean(0)
            scale = float((centred * observed).sum() / (centred * centred).sum())
            cameras[view] = (scale, points[view].mean(0) - scale * image.mean(0))
        system = np.concatenate([cameras[v][0] * rotations[v][:2] for v in views])  # (2V, 3)
        targets = np.concatenate([(points[v] - cameras[v][1]).T for v in views])  # (2V, L)
        shape = np.linalg.lstsq(system, targets, rcond=None)[0].T
    return float(np.mean([np.linalg.norm(cameras[v][0] * shape @ rotations[v][:2].T + cameras[v][1] - points[v],
                                         axis=1).mean() for v in views]))


def yaw_scale_supported(points: dict[str, np.ndarray], scales=np.arange(0.8, 2.01, 0.1)) -> tuple[float, dict]:
    """The factor on FFHQ-UV's fitted yaws that best explains the views' landmarks as one rigid point set.

    Returns (best factor, {factor: residual px}); 1.0 would mean the landmarks agree with FFHQ-UV's Deep3D poses.
    """
    residuals = {}
    for scale in scales:
        rotations = {v: deep3d_rotation(p, y * scale, r) for v, (p, y, r) in FFHQ_UV_ANGLES.items() if v in points}
        residuals[round(float(scale), 3)] = multiview_residual(points, rotations)
    return min(residuals, key=residuals.get), residuals


def pose_evidence(landmarks: dict[str, np.ndarray], ffhq_lm: dict[str, np.ndarray]) -> dict:
    """Print and return what the landmarks alone say about FFHQ-UV's poses and 68 points (no template, no fit).

    - the factor on FFHQ-UV's yaws that best explains each detector's landmarks of the three views as one rigid
      point set (``yaw_scale_supported``; face-oval / jaw points left out, they are silhouettes);
    - the mean 2D distance between mediapipe's points (through the iBUG table) and FFHQ-UV's 68 per view: the
      floor of the 68-point reprojection error for any fit driven by mediapipe.
    """
    from stages.geometry.landmark_schemes import IBUG68_SCHEME
    from stages.geometry.uv_topology import FACE_OVAL_LANDMARKS

    inner = np.setdiff1d(np.arange(len(next(iter(landmarks.values())))), FACE_OVAL_LANDMARKS)
    sets = {"FFHQ-UV 68 (no jaw)": {v: p[17:] for v, p in ffhq_lm.items()},
            "mediapipe 468 (no oval)": {v: p[inner] for v, p in landmarks.items()}}
    out: dict = {"yaw_scale": {}, "detector_gap_px": {}}
    for name, points in sets.items():
        best, residuals = yaw_scale_supported(points)
        out["yaw_scale"][name] = (best, residuals)
        print(f"{name}: one rigid shape fits best with FFHQ-UV's yaws x{best:.2f} ({residuals[best]:.2f} px; "
              f"x1.00: {residuals[1.0]:.2f} px)")
    rows = list(IBUG68_SCHEME.from_mediapipe)
    for view in VIEWS:
        out["detector_gap_px"][view] = float(np.linalg.norm(landmarks[view][rows] - ffhq_lm[view], axis=1).mean())
    print("mediapipe vs FFHQ-UV's 68-point detector, 2D: " +
          "  ".join(f"{v} {d:.1f} px" for v, d in out["detector_gap_px"].items()))
    return out


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) SSIM of two (H, W, 3) images in [0, 255], averaged over channels (Gaussian window)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = np.zeros(a.shape[:2])
    for channel in range(3):
        x, y = a[..., channel].astype(np.float64), b[..., channel].astype(np.float64)

        def blur(image):
            return cv2.GaussianBlur(image, (0, 0), SSIM_SIGMA)

        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        out += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return out / 3


def psnr_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and mean SSIM of two (H, W, 3) images over the (H, W) bool mask."""
    mse = float(np.mean((a[mask].astype(np.float64) - b[mask].astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12)), float(ssim_map(a, b)[mask].mean())


def scored_texels(topology, reference: np.ndarray | None = None) -> np.ndarray:
    """(S, S) bool: texels FFHQ-UV fills from its views (minor_valid_whole, not hair) minus its fixed boxes.

    With a reference map, texels it leaves black (outside its UV island) are dropped too.
    """
    masks = topology.masks()
    scored = (masks["minor_valid_whole"] > 0.5) & (masks["hair"] < 0.5)
    for box in topology.fill_regions():
        scored[box.top:box.bottom, box.left:box.right] = False
    if reference is not None:
        scored &= reference.sum(axis=2) > 0
    return scored


def cross_view_agreement(unwraps) -> dict[str, tuple[float, float]]:
    """PSNR / SSIM of each side view's unwrap against the front view's, over texels both see well.

    The side view is first matched to the front's mean colour there (StyleFlow's views differ slightly in
    exposure), so what remains is misregistration and shading.
    """
    front = unwraps["front"]
    out = {}
    for view in ("left", "right"):
        if view not in unwraps:
            continue
        side = unwraps[view]
        both = cv2.erode(((front.mask > 0) & (side.mask > 0)).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        if both.sum() < 100:
            continue
        gain = front.texture[both].astype(np.float64).mean(0) / np.maximum(side.texture[both].mean(0), 1e-6)
        matched = np.clip(side.texture * gain, 0, 255)
        out[view] = psnr_ssim(front.texture, matched, both)
    return out


# Rows (1024 UV) of the temple and jaw bands whose left/right brightness the bench compares (issue 13: shading).
SIDE_BANDS = {"temple": (260, 400), "jaw": (480, 640)}
SIDE_BAND_WIDTH = 80  # texels inwards from the centre face's edge, mirrored about the face's axis


def side_band_brightness(uv: np.ndarray, centre_face: np.ndarray, axis: float,
                         valid: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    """Mean luma Y (0-255) of the UV-left and UV-right outer bands of the centre face per ``SIDE_BANDS`` row range.

    Per row the bands are the outer ``SIDE_BAND_WIDTH`` texels of the centre face's extent made symmetric about
    ``axis`` (the narrower side's reach), so both sides cover mirrored texels. ``valid`` (a view's unwrap mask):
    only its texels count, NaN for a band it does not see. Returns band -> (left, right).
    """
    from stages.texture.color import rgb_to_yuv

    luma = rgb_to_yuv(np.asarray(uv, dtype=np.float32))[..., 0]
    inside = centre_face > 0.5
    out = {}
    for band, (top, bottom) in SIDE_BANDS.items():
        left, right = np.zeros_like(inside), np.zeros_like(inside)
        for row in range(top, bottom):
            cols = np.nonzero(inside[row])[0]
            if cols.size:
                half = min(axis - cols.min(), cols.max() - axis)
                low, high = int(round(axis - half)), int(round(axis + half))
                left[row, low:low + SIDE_BAND_WIDTH] = True
                right[row, high - SIDE_BAND_WIDTH + 1:high + 1] = True
        seen = inside if valid is None else inside & (valid > 0)
        out[band] = tuple(float(luma[side & seen].mean()) if (side & seen).any() else float("nan")
                          for side in (left, right))
    return out


# Bands around each eye opening whose luma the bench reports (lashes or eye-corner shadow left in the views' masks
# smear dark into the lids): rows from the opening's upper rim (negative, upwards) or lower rim (positive), the
# opening being the template head's eyelid contour in UV (``landmark_uv``), over the middle EYE_BAND_SPAN of its
# width (stop None: to the lower rim). "over" is where the upper lashes lie in the views, "lid" the upper lid's skin
# between them and the brow, "cheek" the skin under the eye the others are compared with.
EYE_BANDS = {"lid": ("top", -42, -30), "over": ("top", -28, -4), "opening": ("top", 0, None),
             "under": ("bottom", 1, 13), "cheek": ("bottom", 24, 40)}
EYE_BAND_SPAN = 0.7


def eye_band_luma(uv: np.ndarray, topology) -> dict[str, dict[str, float]]:
    """Mean luma Y (0-255) of the (H, W, 3) map in ``EYE_BANDS`` around each eye: eye -> band -> Y."""
    from mediapipe.python.solutions import face_mesh_connections as fmc

    from stages.geometry.uv_topology import edge_loops
    from stages.texture.color import rgb_to_yuv

    luma = rgb_to_yuv(np.asarray(uv, dtype=np.float32))[..., 0]
    points = topology.landmark_uv()
    out = {}
    for eye, connections in (("UV-left", fmc.FACEMESH_RIGHT_EYE), ("UV-right", fmc.FACEMESH_LEFT_EYE)):
        opening = np.zeros(luma.shape, np.uint8)
        cv2.fillPoly(opening, [np.round(points[edge_loops(connections)[0]] * 16).astype(np.int32)], 1, shift=4)
        cols = np.nonzero(opening.any(axis=0))[0]
        margin = int(round((1 - EYE_BAND_SPAN) / 2 * cols.size))
        bands = {name: np.zeros(luma.shape, bool) for name in EYE_BANDS}
        for col in cols[margin:cols.size - margin]:
            rows = np.nonzero(opening[:, col])[0]
            for name, (rim, start, stop) in EYE_BANDS.items():
                edge = rows.min() if rim == "top" else rows.max()
                bands[name][edge + start:rows.max() + 1 if stop is None else edge + stop, col] = True
        out[eye] = {name: float(luma[band].mean()) for name, band in bands.items()}
    return out


def run(topology_obj: Path, reference_path: Path | None, pictures: Path | None) -> dict:
    """Unwrap and complete 01223 and print its figures; returns them."""
    from stages.face.landmarks import FaceLandmarker
    from stages.geometry.fitting import ShapeModel, fit_views
    from stages.geometry.topologies import load_topology
    from stages.imageio import decode_image
    from stages.texture.merge import UVView, complete_texture
    from stages.texture.quality import brightness_symmetry_error, symmetry_axis, valid_ratio
    from stages.texture.template import template_for
    from stages.unwrap import UnwrapSettings, unwrap_sample

    with tempfile.TemporaryDirectory() as cache:
        topology = load_topology("hifi3dpp", obj_path=str(topology_obj), cache_dir=cache)
        topology.masks()
    model = ShapeModel(topology)
    images = {v: decode_image((EDIT / f"01223_{v}.png").read_bytes()) for v in VIEWS}
    with FaceLandmarker(max_faces=1) as detector:
        landmarks = {v: detector.detect_one(im).points[:, :2] for v, im in images.items()}
    fit = fit_views(model, landmarks, {v: im.shape[:2] for v, im in images.items()})
    unwraps = unwrap_sample(topology, model, images, landmarks, UnwrapSettings())
    ffhq_lm = read_ffhq_uv_landmarks()
    figures: dict = {"views": {}}
    print("view   pitch   yaw    roll   (FFHQ-UV: pitch yaw roll)  lm68 px  mp468 px  valid")
    for view in VIEWS:
        pitch, yaw, roll = deep3d_angles(fit.poses[view])
        ref = FFHQ_UV_ANGLES[view]
        err68 = lm68_error(model, fit, view, ffhq_lm[view])
        figures["views"][view] = {"angles": (pitch, yaw, roll), "lm68_px": err68, "mp468_px": fit.errors_px[view],
                                  "valid_ratio": unwraps[view].valid_ratio}
        print(f"{view:6s} {pitch:+6.2f} {yaw:+6.2f} {roll:+6.2f}   ({ref[0]:+6.2f} {ref[1]:+6.2f} {ref[2]:+6.2f})"
              f"     {err68:6.2f}   {fit.errors_px[view]:6.2f}   {unwraps[view].valid_ratio:.3f}")
    figures["pose_evidence"] = pose_evidence(landmarks, ffhq_lm)

    regions = topology.masks()
    template = template_for("hifi3dpp", regions, None)
    boxes = {r.name: (r.top, r.bottom, r.left, r.right) for r in topology.fill_regions()}
    views = {v: UVView(u.texture.astype(np.float32), (u.mask > 127).astype(np.float32)) for v, u in unwraps.items()}
    result = complete_texture(views, template, regions, boxes)
    centre = regions["center_face"]
    figures["valid_ratio"] = valid_ratio(result.fill_mask, centre)
    axis = symmetry_axis(regions["eye_l"], regions["eye_r"])
    figures["bs_error"] = brightness_symmetry_error(result.uv, centre, axis)
    print(f"merged valid ratio {figures['valid_ratio']:.3f}   BS error {figures['bs_error']:.2f}")
    figures["side_bands"] = side_band_brightness(result.uv, centre, axis)
    bands = figures["side_bands"].items()
    print("map side bands (Y, UV-left / UV-right): "
          + "  ".join(f"{band} {left:.1f} / {right:.1f} ({left - right:+.1f})" for band, (left, right) in bands))
    # The same bands in each view's own unwrap: a gap already in the views is their lighting, not the merge's.
    for view in VIEWS:
        own = side_band_brightness(unwraps[view].texture, centre, axis, unwraps[view].mask)
        print(f"  {view:5s} view's own bands: "
              + "  ".join(f"{band} {left:.1f} / {right:.1f}" for band, (left, right) in own.items()))
    figures["eye_bands"] = eye_band_luma(result.uv, topology)
    for eye, bands in figures["eye_bands"].items():
        relative = (f"{name} {bands[name] - bands['cheek']:+.1f}" for name in ("lid", "over", "opening", "under"))
        print(f"map {eye} eye bands (Y minus cheek {bands['cheek']:.1f}): " + "  ".join(relative))
    figures["cross_view"] = cross_view_agreement(unwraps)
    for view, (p, s) in figures["cross_view"].items():
        print(f"proxy: {view} unwrap vs front unwrap  PSNR {p:.2f} dB  SSIM {s:.4f}")
    reference = None if reference_path is None else decode_image(reference_path.read_bytes())
    if reference is not None:
        scored = scored_texels(topology, reference)
        figures["reference"] = psnr_ssim(result.uv, reference, scored)
        print(f"map vs reference {reference_path.name}: PSNR {figures['reference'][0]:.2f} dB  "
              f"SSIM {figures['reference'][1]:.4f}  over {scored.mean():.1%} of the texels")
    if pictures is not None:
        save_pictures(pictures, images, landmarks, ffhq_lm, fit, model, unwraps, result.uv)
    # What score_photos compares photo-profile maps with: this map, the texels it took from the views, the
    # scored texels, and the reference map.
    figures.update(uv=result.uv, fill=result.fill_mask > 0.5, scored=scored_texels(topology), reference_map=reference)
    return figures


def score_photos(photos: list[Path], overrides: list[str], topology_obj: Path, views: dict,
                 reference_name: str | None) -> dict[str, dict[str, tuple[float, float]]]:
    """The photo profile's map of each photo (``ffhq-uv run``, hifi3dpp from ``topology_obj``) scored against the
    (S, S, 3) map of FFHQ-UV's views and the reference map if given (``views``: ``run``'s figures);
    {photo: {against: (PSNR, SSIM)}}.

    Against the views' map it is scored twice: over all scored texels, and over those the views' map took from its
    views (``views["fill"]``). Most of the ears, neck and outer cheeks that ``scored_texels`` counts hold that map's
    template, so the first figure also rewards a photo map for showing the same template there."""
    import shutil
    import subprocess

    from stages.imageio import decode_image

    scored = views["scored"]
    references = {"the views' map": (views["uv"], scored),
                  "the views' map, its view-filled texels": (views["uv"], scored & views["fill"])}
    reference = views["reference_map"]
    if reference is not None:
        references[reference_name] = (reference, scored & (reference.sum(axis=2) > 0))
    cli = Path(sys.executable).with_name("ffhq-uv")
    out: dict = {}
    for photo in photos:
        with tempfile.TemporaryDirectory() as work:
            folder = Path(work) / "input"
            folder.mkdir()
            shutil.copy(photo, folder / photo.name)
            run_dir = Path(work) / "run"
            subprocess.run([str(cli), "run", "--input", str(folder), "--output", str(run_dir), "--no-progress",
                            "--no-visuals", "topology.name=hifi3dpp", f"topology.obj={topology_obj}", *overrides],
                           check=True, capture_output=True, text=True)
            uv = decode_image(next(run_dir.glob("shards/*/samples/*/uv.png")).read_bytes())
        out[photo.name] = {name: psnr_ssim(uv, ref, mask) for name, (ref, mask) in references.items()}
        for name, (psnr, ssim) in out[photo.name].items():
            print(f"photo profile map of {photo.name} {' '.join(overrides)} vs {name}: PSNR {psnr:.2f} dB  "
                  f"SSIM {ssim:.4f}")
    return out


def save_pictures(folder: Path, images, landmarks, ffhq_lm, fit, model, unwraps, uv) -> None:
    """Views with FFHQ-UV's 68 landmarks (green) and the fitted head's (red), the per-view unwraps and the map."""
    from stages.geometry.landmark_schemes import IBUG68_SCHEME

    folder.mkdir(parents=True, exist_ok=True)
    rows = list(IBUG68_SCHEME.from_mediapipe)
    for view, image in images.items():
        lm468 = model.topology.landmark_points(fit.vertices_of(view))[rows]
        canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        for x, y in ffhq_lm[view]:
            cv2.circle(canvas, (int(round(x)), int(round(y))), 4, (0, 200, 0), -1)
        for x, y in fit.poses[view].project(lm468)[:, :2]:
            cv2.circle(canvas, (int(round(x)), int(round(y))), 3, (0, 0, 255), -1)
        cv2.imwrite(str(folder / f"view_{view}.png"), canvas)
        cv2.imwrite(str(folder / f"uv_{view}.png"), cv2.cvtColor(unwraps[view].texture, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "uv.png"), cv2.cvtColor(uv, cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="FFHQ-UV's final map of 01223 (1024 PNG)")
    parser.add_argument("--pictures", type=Path, help="write views, unwraps and map here")
    parser.add_argument("--topology-obj", type=Path, default=HEAD_OBJ)
    parser.add_argument("--photo", type=Path, action="append", default=[],
                        help="also score the photo profile's map of this photo (repeatable)")
    parser.add_argument("--photo-override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the photo runs (repeatable)")
    args = parser.parse_args()
    if not EDIT.exists() or not args.topology_obj.exists():
        sys.exit(f"needs {EDIT} and {args.topology_obj}")
    figures = run(args.topology_obj, args.reference, args.pictures)
    if args.photo:
        score_photos(args.photo, args.photo_override, args.topology_obj, figures,
                     None if args.reference is None else args.reference.name)


if __name__ == "__main__":
    main()
