"""Export as a stylegan2-ada-pytorch dataset, read as is by its ``ImageFolderDataset`` / ``train.py --data``.

Layout (``dataset_tool.py``'s naming): ``00000/img00000000.png``, ``00000/img00000001.png``, ...,
1,000 images per folder, plus ``dataset.json`` = ``{"labels": [["00000/img00000000.png", label], ...]}``.
ImageFolderDataset sorts the image names it finds and looks each one up in that list, so every image
has its own entry; ``label`` is
- ``attributes``: the front view's 17-dim StyleFlow condition (float vector, a conditional GAN's ``c``);
- ``classes``: the interpolation class index of ``pipeline.interpolate`` (int, default bins);
- ``none``: ``"labels": null`` (unconditional).
``--crop cropface630``: FFHQ-UV's second texture GAN was trained on the face crop of FFHQ-UV-Interpolate
maps, UV rows 115:745, cols 195:825 of a 1024 map (630 x 630, FFHQ-UV pastes it at rows 187:1211,
cols 317:1341 of its 1664 template), resized to 1024 (Lanczos: FFHQ-UV's resize filter is not published).

A DEST ending in ``.zip`` gets one zip (built in a local temporary file, uploaded whole: a zip cannot be
resumed part-way); a folder DEST resumes per image folder. ``dataset.json`` is written last.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from pipeline.export.common import ExportSummary, Selection, dumps, open_destination, write_if_changed
from pipeline.run_samples import RunSample
from pipeline.storage import Storage, open_storage
from stages.errors import ConfigError

GROUP_SIZE = 1000  # images per folder, as dataset_tool writes them
CROP_1024 = (115, 745, 195, 825)  # rows, cols of FFHQ-UV's cropface630 in a 1024 UV map
CROP_OUTPUT = 1024
DATASET_JSON = "dataset.json"


def image_name(index: int) -> str:
    return f"{index // GROUP_SIZE:05d}/img{index:08d}.png"


def label_of(sample: RunSample, labels: str) -> Any:
    from pipeline.interpolate import InterpolateConfig, class_names, face_class

    if labels == "none":
        return None
    if sample.attribute is None:
        raise ConfigError(f"sample {sample.id} has no attribute vector: use --labels none")
    if labels == "attributes":
        return [float(v) for v in sample.attribute]
    config = InterpolateConfig()
    name = face_class(sample.attribute, config)
    if name is None:
        raise ConfigError(f"sample {sample.id} has no finite gender/age/beard: use --labels attributes or none")
    return class_names(config).index(name)


def cropface630(png: bytes) -> bytes:
    """FFHQ-UV's face crop of a UV map (any size; the 1024 box scaled), resized to 1024, as PNG."""
    from PIL import Image

    from stages.imageio import decode_image, encode_png

    uv = decode_image(png, source="uv", min_side=1)
    scale = uv.shape[0] / 1024
    top, bottom, left, right = (round(v * scale) for v in CROP_1024)
    face = Image.fromarray(uv[top:bottom, left:right]).resize((CROP_OUTPUT, CROP_OUTPUT), Image.LANCZOS)
    return encode_png(np.asarray(face))


def _image_bytes(source: Storage, sample: RunSample, crop: str) -> bytes:
    data = source.read_bytes(sample.uv_path)
    return cropface630(data) if crop == "cropface630" else data


def export(source: Storage, dest_url: str, options, storage_options: dict):
    selection = Selection(source, options.include_filtered)
    if dest_url.lower().endswith(".zip"):
        return _export_zip(source, dest_url, options, selection, storage_options)
    dest, state = open_destination(dest_url, options, selection, storage_options)
    summary = ExportSummary(dest=dest.root_url, samples=len(selection.ids))
    labels = []
    for number, unit in selection.units(GROUP_SIZE):
        summary.units += 1
        labels += [[image_name(index), label_of(sample, options.labels)] for index, sample in unit]
        group = f"{number:05d}"
        if state.is_done(group):
            summary.units_skipped += 1
            continue
        sizes = dest.file_sizes(group)
        for index, sample in unit:
            data = _image_bytes(source, sample, options.crop)
            summary.files_written += write_if_changed(dest, image_name(index), data, sizes)
        state.mark_done(group, {"group": group, "samples": len(unit)})
    dest.write_bytes(DATASET_JSON, dumps({"labels": labels if options.labels != "none" else None}))
    summary.files_written += 1
    return summary


def _export_zip(source: Storage, dest_url: str, options, selection: Selection, storage_options: dict):
    folder, name = dest_url.rstrip("/").rsplit("/", 1) if "/" in dest_url else (".", dest_url)
    dest, state = open_destination(folder, options, selection, storage_options)
    summary = ExportSummary(dest=open_storage(folder, storage_options).url(name), samples=len(selection.ids), units=1)
    if state.is_done(name) or dest.exists(name):  # uploaded whole: a zip that is there is complete
        if not state.is_done(name):
            state.mark_done(name, {"zip": name, "samples": len(selection.ids)})
        summary.units_skipped = 1
        return summary
    handle, tmp = tempfile.mkstemp(suffix=".zip")
    os.close(handle)
    try:
        labels = []
        # PNGs are compressed already: stored, as dataset_tool writes them.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for _, unit in selection.units(GROUP_SIZE):
                for index, sample in unit:
                    archive.writestr(_entry(image_name(index)), _image_bytes(source, sample, options.crop))
                    labels.append([image_name(index), label_of(sample, options.labels)])
            archive.writestr(_entry(DATASET_JSON), dumps({"labels": labels if options.labels != "none" else None}))
        dest.put_file(name, tmp)
    finally:
        os.unlink(tmp)
    summary.files_written = 1
    state.mark_done(name, {"zip": name, "samples": len(selection.ids)})
    return summary


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip member with a fixed time, so the same run gives the same zip."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info
