"""Export in FFHQ-UV's release layout (README_dataset, pipeline.md 4)::

    uv-maps/<clip>/<id>.png                          the final UV map, byte for byte as the run wrote it
    face-latents/<clip>/<id>/<id>_<view>_latent.pt   {latent [1, 18, 512], attribute [1, 17, 1, 1]} per view
    meta-info.json                                   {id: {ffhq_index, gender, age, beard, status}}

Clips of 1,000 samples (``000``, ``001``, ...) in the run's input order. Latents come from the released
files a ``from-latents`` run read, or the edit stage's columns; a run without latents (photo profile)
exports maps and meta-info only. ``meta-info.json`` is written last: its presence means the export is complete.
"""

from __future__ import annotations

from pipeline.export.common import ExportSummary, Selection, dumps, open_destination, sample_meta, write_if_changed
from pipeline.storage import Storage
from stages.latents import CLIP_SIZE, clip_name, view_file_name

META_INFO = "meta-info.json"


def export(source: Storage, dest_url: str, options, storage_options: dict):
    selection = Selection(source, options.include_filtered)
    dest, state = open_destination(dest_url, options, selection, storage_options)
    summary = ExportSummary(dest=dest.root_url, samples=len(selection.ids))
    meta = {}
    for number, unit in selection.units(CLIP_SIZE):
        clip = clip_name(unit[0][0])
        summary.units += 1
        for _, sample in unit:
            meta[sample.id] = {**sample_meta(sample), "clip": clip}
        if state.is_done(f"clip-{clip}"):
            summary.units_skipped += 1
            continue
        sizes = {**dest.file_sizes(f"uv-maps/{clip}"), **dest.file_sizes(f"face-latents/{clip}")}
        written = 0
        for _, sample in unit:
            written += write_if_changed(dest, f"uv-maps/{clip}/{sample.id}.png", source.read_bytes(sample.uv_path),
                                        sizes)
            for view, data in sample.latent_files(source).items():
                written += write_if_changed(dest, f"face-latents/{clip}/{sample.id}/{view_file_name(sample.id, view)}",
                                            data, sizes)
        summary.files_written += written
        state.mark_done(f"clip-{clip}", {"clip": clip, "samples": len(unit), "unit": number})
    dest.write_bytes(META_INFO, dumps(meta))
    summary.files_written += 1
    return summary
