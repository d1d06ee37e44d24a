"""A contact sheet: each finished UV map beside the photo it came from, in one PNG.

Written at the end of ``ffhq-uv run`` as ``OUT/contact_sheet.png`` so that a first
run shows its result at a glance; ``ffhq-uv report`` makes the full HTML report.
"""

from __future__ import annotations

import io
from typing import Optional

import pyarrow.compute as pc
from PIL import Image, ImageDraw

from pipeline.manifest import manifest_dataset
from pipeline.storage import Storage
from stages.base import Status
from stages.complete import UV
from stages.inversion import INVERSION
from stages.views import ALIGNED

CELL = 256  # pixels per image in the sheet
MAX_SAMPLES = 48
SOURCE_OUTPUTS = (ALIGNED, INVERSION)  # what to show as "the photo", best first


def build_contact_sheet(storage: Storage, relpath: str = "contact_sheet.png",
                        max_samples: int = MAX_SAMPLES) -> Optional[str]:
    """Write the sheet of up to ``max_samples`` UV maps; returns its path, or None if no map exists."""
    rows = manifest_dataset(storage).to_table(
        columns=["id", "source_uri", "outputs"], filter=pc.field("status") != Status.FAILED.value).to_pylist()
    pairs = []
    for row in rows:
        outputs = dict(row["outputs"] or [])
        if UV not in outputs:
            continue
        source = next((outputs[name]["path"] for name in SOURCE_OUTPUTS if name in outputs), None)
        pairs.append((row["id"], source, outputs[UV]["path"], row["source_uri"]))
        if len(pairs) == max_samples:
            break
    if not pairs:
        return None
    columns = 2 if len(pairs) > 1 else 1  # two (photo, UV) pairs per sheet row
    sheet_rows = (len(pairs) + columns - 1) // columns
    label = 20
    sheet = Image.new("RGB", (columns * 2 * CELL, sheet_rows * (CELL + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (sample_id, source, uv, source_uri) in enumerate(pairs):
        x, y = (i % columns) * 2 * CELL, (i // columns) * (CELL + label)
        photo = _open(storage.read_bytes(source)) if source else _open(storage.read_source(source_uri))
        sheet.paste(_fit(photo), (x, y + label))
        sheet.paste(_fit(_open(storage.read_bytes(uv))), (x + CELL, y + label))
        draw.text((x + 4, y + 4), f"{sample_id}: photo | UV map", fill="black")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    storage.write_bytes(relpath, buffer.getvalue())
    return relpath


def _open(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _fit(image: Image.Image) -> Image.Image:
    """Letterbox into a CELL x CELL square."""
    image = image.copy()
    image.thumbnail((CELL, CELL))
    cell = Image.new("RGB", (CELL, CELL), "white")
    cell.paste(image, ((CELL - image.width) // 2, (CELL - image.height) // 2))
    return cell
