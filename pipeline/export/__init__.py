"""``ffhq-uv export RUN DEST --format F``: a finished run in the layouts people train from.

Formats (one module each):
- ``ffhq-uv`` (``ffhq_uv.py``): FFHQ-UV's release layout, ``uv-maps/<clip>/<id>.png``,
  ``face-latents/<clip>/<id>/<id>_<view>_latent.pt``, ``meta-info.json``, clips of 1,000;
- ``stylegan2-ada`` (``stylegan2_ada.py``): what stylegan2-ada-pytorch's ``ImageFolderDataset``
  reads (a folder, or a ``.zip`` DEST), ``dataset.json`` labels, optionally FFHQ-UV's
  ``cropface630`` face crop;
- ``webdataset`` (``webdataset.py``): tar shards of ``<key>.png`` + ``<key>.json``.

Every format takes the run's ``ok`` samples in input order (``--include-filtered`` adds the
filtered ones), streams them one file at a time (the run is read shard by shard), writes
local or fsspec (``s3://``) destinations from local or fsspec runs, and resumes
(``pipeline/export/state.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

from pipeline import layout
from pipeline.export import ffhq_uv, stylegan2_ada, webdataset
from pipeline.export.common import ExportSummary
from pipeline.storage import Storage, open_storage
from stages.errors import ConfigError

FORMATS = ("ffhq-uv", "stylegan2-ada", "webdataset")
LABELS = ("attributes", "classes", "none")
CROPS = ("none", "cropface630")


@dataclass(frozen=True)
class ExportOptions:
    format: str
    include_filtered: bool = False
    labels: str = "attributes"  # stylegan2-ada: the 17-dim condition, interpolation classes, or none
    crop: str = "none"  # stylegan2-ada: cropface630 = FFHQ-UV's face crop resized to 1024
    shard_size: int = 1000  # webdataset: samples per tar shard

    def check(self) -> None:
        for name, value, choices in (("--format", self.format, FORMATS), ("--labels", self.labels, LABELS),
                                     ("--crop", self.crop, CROPS)):
            if value not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        if self.shard_size < 1:
            raise ConfigError("--shard-size must be at least 1")


def export_run(run: str | Storage, dest: str | Storage, options: ExportOptions,
               storage_options: Optional[dict[str, Any]] = None) -> ExportSummary:
    """Export the run at ``run`` to ``dest`` (URLs or Storage objects) in ``options.format``."""
    options.check()
    source = run if isinstance(run, Storage) else open_storage(run, storage_options)
    if not source.exists(layout.RUN_JSON):
        raise ConfigError(f"{source.root_url} is not a run folder (no {layout.RUN_JSON})")
    started = time.time()
    writer = {"ffhq-uv": ffhq_uv.export, "stylegan2-ada": stylegan2_ada.export,
              "webdataset": webdataset.export}[options.format]
    summary = writer(source, dest if isinstance(dest, str) else dest.root_url, options, storage_options or {})
    summary.seconds = time.time() - started
    return summary
