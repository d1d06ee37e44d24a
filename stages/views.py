"""The views of a face: their names, order and yaws, and the file keys of their images.

FFHQ-UV makes three normalised views per face (edit stage): ``front``, ``left``
(StyleFlow yaw +30) and ``right`` (yaw -30). The relight stage may replace a view
by a relit copy. The photo profile has no GAN, so its single view is the aligned
photo, used as ``front``. The ``views`` input format provides ready-made views
(FFHQ-UV's ``edit/<id>/<id>_<view>.png``) under the same keys as the edit stage.

This is the one place for view names: every stage, the UV topology and the tests
iterate over ``VIEW_NAMES``.
"""

from __future__ import annotations

from stages.base import Sample

FRONT, LEFT, RIGHT = "front", "left", "right"
VIEW_NAMES: tuple[str, ...] = (LEFT, RIGHT, FRONT)  # FFHQ-UV's merge order: left -> right -> front
# StyleFlow's Yaw attribute per view, degrees (Face-API / MS-API sign: yaw -30 makes FFHQ-UV's "_right" view).
VIEW_YAWS: dict[str, float] = {FRONT: 0.0, LEFT: 30.0, RIGHT: -30.0}

# File keys of view images (``Sample.outputs`` / ``Sample.inputs``); per view, ``key.format(view=...)``.
VIEW = "view_{view}"  # an edited view (edit stage, or the ``views`` input format)
RELIT = "relit_{view}"  # a relit view (relight stage)
ALIGNED = "aligned"  # the FFHQ-aligned photo (attribute stage with input=photo; inversion with write_aligned)
ANY_VIEW = (RELIT, VIEW, ALIGNED)  # what a stage that reads "the current views" needs: any one of these


def view_key(template: str, view: str) -> str:
    """The file key of ``view`` for a per-view key template (``view_key(VIEW, "left") == "view_left"``)."""
    return template.format(view=view)


def current_views(sample: Sample) -> dict[str, str]:
    """View name -> image path (run-relative output or input URI), the latest version of each view.

    ``relit_<view>`` wins over ``view_<view>`` (an output wins over an input of the
    same key); with no views at all the aligned photo is the front view. Empty if the
    sample has no image to use. ``StageContext.read_image`` reads either kind of path.
    """
    views: dict[str, str] = {}
    for name in VIEW_NAMES:
        for key in (view_key(RELIT, name), view_key(VIEW, name)):
            if key in sample.outputs:
                views[name] = sample.outputs[key].path
                break
            if key in sample.inputs:
                views[name] = sample.inputs[key]
                break
    if not views and ALIGNED in sample.outputs:
        views[FRONT] = sample.outputs[ALIGNED].path
    return views
