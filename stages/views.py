"""Which images of a sample are its "views" for the stages after editing.

FFHQ-UV makes three normalised views per face (edit stage): ``front``, ``left``
(StyleFlow yaw +30) and ``right`` (yaw -30). The relight stage may replace a view
by a relit copy. The photo profile has no GAN, so its single view is the aligned
photo, used as ``front``.
"""

from __future__ import annotations

from stages.base import Sample

VIEW_NAMES: tuple[str, ...] = ("left", "right", "front")  # FFHQ-UV's merge order: left -> right -> front


def current_views(sample: Sample) -> dict[str, str]:
    """View name -> run-relative image path, the latest version of each view.

    ``relit_<view>`` wins over ``view_<view>``; with no edited views at all the
    aligned photo is the front view. Empty if the sample has no image to use.
    """
    views: dict[str, str] = {}
    for name in VIEW_NAMES:
        for output in (f"relit_{name}", f"view_{name}"):
            if output in sample.outputs:
                views[name] = sample.outputs[output].path
                break
    if not views and "aligned" in sample.outputs:
        views["front"] = sample.outputs["aligned"].path
    return views
