"""``ffhq-uv report OUT``: a static, self-contained HTML report of a run.

Sections: run summary; a gallery of UV maps beside their source photos with
per-sample metrics; the failed and filtered samples; histograms of the 17 StyleFlow
attributes and of the quality metrics; mean stage seconds per sample; throughput
over time from the shards' commit times.

Every image is a downscaled JPEG embedded as a data URI and every chart is inline
SVG, so the one file works offline, can be mailed or attached to a ticket, and a
report of an ``s3://`` run is written to a local file. No JavaScript. Only a
bounded number of samples is drawn (``--gallery N``, spread evenly over the
chosen rows), so the report stays small for a 70k run.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa

from pipeline import layout
from pipeline.storage import Storage, endpoint_options, open_storage
from stages.attribute import ATTRIBUTE_VECTOR
from stages.base import Status
from stages.complete import UV
from stages.condition import LABELS as ATTRIBUTE_LABELS
from stages.inversion import INVERSION
from stages.unwrap import UV_VIEW
from stages.views import ALIGNED, FRONT, RELIT, VIEW, view_key

# The image drawn as "the UV map" of a sample: the final map if the run has it,
# else the furthest-along image a sample has (runs of fewer stages).
UV_OUTPUTS = (UV, *(view_key(key, FRONT) for key in (UV_VIEW, RELIT, VIEW)), INVERSION, ALIGNED)
SOURCE_OUTPUTS = (ALIGNED,)  # fallback when the source photo cannot be read
THUMB_PX = 192  # longest side of embedded images
JPEG_QUALITY = 85
DEFAULT_GALLERY = 60
MAX_FAILURE_ROWS = 500
MAX_CARD_METRICS = 8
METRIC_PREFIXES = ("complete_", "unwrap_", "relight_", "edit_", "inversion_")  # card order: final quality first
HIST_BINS = 20
READ_THREADS = 8  # concurrent image reads for the gallery


@dataclass
class ReportData:
    """What the report shows, gathered from the run's files."""

    run: dict[str, Any]
    shards: dict[int, dict[str, Any]]
    rows: pa.Table  # scalar columns of every committed row (no latents)
    attribute_vectors: Optional[np.ndarray]  # (N, 17) float, NaN where unavailable; None if no attribute column
    gallery: list[dict[str, Any]] = field(default_factory=list)


def build_report(storage: Storage, out_path: str | os.PathLike, gallery_size: int = DEFAULT_GALLERY,
                 where: Optional[str] = None) -> Path:
    """Write the HTML report of the run in ``storage`` to the local file ``out_path``; returns its path.

    ``where`` is a DuckDB condition on the manifest choosing the gallery's samples
    (default: every sample with status ok), e.g. ``complete_valid_ratio < 0.8``.
    """
    data = gather(storage, gallery_size, where)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(storage, data), encoding="utf-8")
    return out


def gather(storage: Storage, gallery_size: int = DEFAULT_GALLERY, where: Optional[str] = None) -> ReportData:
    """Read run.json, the shards' stats and the manifest's scalar columns; pick the gallery."""
    from pipeline.manifest import committed_shards, manifest_dataset  # pyarrow.dataset: keep the CLI start fast

    if not storage.exists(layout.RUN_JSON):
        raise FileNotFoundError(f"{storage.root_url} is not a run folder (no {layout.RUN_JSON})")
    run = json.loads(storage.read_bytes(layout.RUN_JSON))
    shards = committed_shards(storage)
    if not shards:
        empty = pa.table({"id": pa.array([], pa.string()), "status": pa.array([], pa.string())})
        return ReportData(run=run, shards={}, rows=empty, attribute_vectors=None)
    dataset = manifest_dataset(storage, shards)
    schema = dataset.schema
    scalar = [f.name for f in schema if _is_scalar(f.type)]
    wanted = scalar + [name for name in ("stage_seconds", "outputs") if name in schema.names]
    rows = dataset.to_table(columns=wanted).sort_by([("input_index", "ascending")])
    vectors = None
    if ATTRIBUTE_VECTOR in schema.names:
        column = dataset.to_table(columns=["input_index", ATTRIBUTE_VECTOR]).sort_by(
            [("input_index", "ascending")])[ATTRIBUTE_VECTOR].to_pylist()
        # Rows the attribute stage never reached have no vector; NaNs inside one are values it could not give.
        vectors = np.array([_vector(v) for v in column if v is not None], dtype=np.float64).reshape(
            -1, len(ATTRIBUTE_LABELS))
    data = ReportData(run=run, shards=shards, rows=rows, attribute_vectors=vectors)
    data.gallery = _pick_gallery(storage, rows, gallery_size, where)
    return data


def _is_scalar(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_string(
        arrow_type) or pa.types.is_boolean(arrow_type)


def _vector(value: list) -> list[float]:
    if len(value) != len(ATTRIBUTE_LABELS):
        return [math.nan] * len(ATTRIBUTE_LABELS)
    return [math.nan if v is None else float(v) for v in value]


def _pick_gallery(storage: Storage, rows: pa.Table, size: int, where: Optional[str]) -> list[dict[str, Any]]:
    """Up to ``size`` rows spread evenly over the chosen samples, in input order."""
    if size <= 0 or rows.num_rows == 0:
        return []
    if where:
        from pipeline.ops import query

        chosen = set(query(storage, f"SELECT id FROM manifest WHERE {where}")["id"].to_pylist())
        candidates = [row for row in rows.to_pylist() if row["id"] in chosen]
    else:
        candidates = [row for row in rows.to_pylist() if row["status"] == Status.OK]
    if len(candidates) > size:
        picks = np.unique(np.linspace(0, len(candidates) - 1, size).round().astype(int))
        candidates = [candidates[i] for i in picks]
    return candidates


# -- rendering ---------------------------------------------------------------------------------

def render(storage: Storage, data: ReportData) -> str:
    """The whole HTML document."""
    run = data.run
    counts = _status_counts(data.shards)
    title = f"ffhq-uv report: {run.get('profile', '?')} run at {storage.root_url}"
    sections = [
        _summary(storage, data, counts),
        _gallery(storage, data),
        _failures(data),
        _attribute_section(data),
        _metric_section(data),
        _timing_section(data),
        _throughput_section(data),
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>{_e(title)}</h1>\n{''.join(sections)}\n"
            f"<footer>generated {generated} by ffhq-uv {_e(run.get('code_version', ''))}</footer>\n"
            f"</body></html>\n")


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:20px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;min-width:392px}
.card img{width:192px;height:192px;object-fit:contain;background:#eee}
.card .pair{display:flex;gap:8px}.card .cap{font-size:12px;color:#555}
.card dl{display:grid;grid-template-columns:auto auto;gap:0 12px;font-size:12px;margin:6px 0 0}
.card dd{margin:0;text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{font-size:12px}
.ok{color:#1a7f37}.failed{color:#cf222e}.filtered{color:#9a6700}
footer{margin-top:40px;color:#777;font-size:12px}
svg text{font:10px system-ui,sans-serif;fill:#444}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _status_counts(shards: dict[int, dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for stats in shards.values():
        for status, count in stats["status_counts"].items():
            counts[status] = counts.get(status, 0) + count
    return counts


def _summary(storage: Storage, data: ReportData, counts: dict[str, int]) -> str:
    run = data.run
    samples = sum(counts.values())
    rows = [
        ("output", storage.root_url), ("profile", run.get("profile")), ("stages", ", ".join(run.get("stages", []))),
        ("code version", run.get("code_version")),
        ("shards", f"{len(data.shards)} of {run.get('num_shards', '?')} committed"),
        ("samples", f"{samples} of {run.get('num_samples', '?')} done: "
                    + ", ".join(f"{counts.get(k, 0)} {k}" for k in Status)),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<section id=\"summary\"><h2>Run</h2><table>{body}</table></section>\n"


def _gallery(storage: Storage, data: ReportData) -> str:
    if not data.gallery:
        return "<section id=\"gallery\"><h2>UV maps</h2><p>No samples to show.</p></section>\n"
    metric_names = _metric_columns(data.rows.schema)
    # Reading photos and maps is I/O (S3 round trips): fetch the cards' images concurrently.
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        figures = list(pool.map(lambda row: _card_figures(storage, row), data.gallery))
    cards = []
    for row, images in zip(data.gallery, figures):
        metrics = [(name, row.get(name)) for name in metric_names if _finite(row.get(name))][:MAX_CARD_METRICS]
        seconds = sum(v for v in (row.get("stage_seconds") or {}).values() if v is not None)
        metrics.append(("seconds (all stages)", seconds))
        dl = "".join(f"<dt>{_e(name)}</dt><dd>{_format(value)}</dd>" for name, value in metrics)
        cards.append(f"<div class=\"card\" id=\"sample-{_e(row['id'])}\"><div class=\"pair\">{''.join(images)}</div>"
                     f"<div><b>{_e(row['id'])}</b> <span class=\"{_e(row['status'])}\">{_e(row['status'])}</span>"
                     f" shard {row['shard']:05d}</div><dl>{dl}</dl></div>")
    total = data.rows.num_rows
    return (f"<section id=\"gallery\"><h2>UV maps</h2><p>{len(data.gallery)} samples of {total}, spread evenly "
            f"over the chosen ones: the source photo, the sample's <code>uv</code> map (or its latest image when "
            f"the run stops before the complete stage) and its <code>preview</code> render when there is one.</p>"
            f"<div class=\"cards\">{''.join(cards)}</div></section>\n")


def _card_figures(storage: Storage, row: dict[str, Any]) -> list[str]:
    """The source photo, the UV map (or latest image) and the preview of one sample, as <img> blocks."""
    outputs = dict(row.get("outputs") or [])
    figures = [_figure(_thumbnail_of_source(storage, row, outputs), "source photo")]
    uv_name = next((name for name in UV_OUTPUTS if name in outputs), None)
    figures.append(_figure(_thumbnail_of_output(storage, outputs, uv_name), uv_name or "no image output"))
    if "preview" in outputs:
        figures.append(_figure(_thumbnail_of_output(storage, outputs, "preview"), "preview"))
    return figures


def _thumbnail_of_output(storage: Storage, outputs: dict[str, Any], name: Optional[str]) -> Optional[str]:
    if name is None:
        return None
    try:
        return _thumbnail(storage.read_bytes(outputs[name]["path"]))
    except FileNotFoundError:  # deleted since the manifest was written: the card says "unavailable"
        return None


def _thumbnail_of_source(storage: Storage, row: dict[str, Any], outputs: dict[str, Any]) -> Optional[str]:
    try:
        return _thumbnail(storage.read_source(row["source_uri"]))
    except Exception:  # noqa: BLE001 - the input may have moved or be unreadable: fall back to the aligned crop
        for name in SOURCE_OUTPUTS:
            if name in outputs:
                return _thumbnail_of_output(storage, outputs, name)
    return None


def _thumbnail(data: bytes) -> Optional[str]:
    """An image file's bytes -> a JPEG data URI at most THUMB_PX on its longest side (None if undecodable)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((THUMB_PX, THUMB_PX))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)  # 4:4:4 colour
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(uri: Optional[str], caption: str) -> str:
    if uri is None:
        return f"<div><div class=\"cap\">{_e(caption)}: unavailable</div></div>"
    return f"<div><img src=\"{uri}\" alt=\"{_e(caption)}\"><div class=\"cap\">{_e(caption)}</div></div>"


def _metric_columns(schema: pa.Schema) -> list[str]:
    """Numeric per-sample quality columns, final-quality stages first."""
    numeric = [f.name for f in schema if pa.types.is_floating(f.type)]
    ordered = [name for prefix in METRIC_PREFIXES for name in numeric if name.startswith(prefix)]
    return ordered + [name for name in numeric if name not in ordered and not name.startswith("attribute_")]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _e(value)


def _failures(data: ReportData) -> str:
    rows = data.rows
    if rows.num_rows == 0:
        return ""
    bad = [r for r in rows.select(["id", "shard", "status", "failed_stage", "error_code", "error_message",
                                    "filter_reason"]).to_pylist() if r["status"] != "ok"]
    if not bad:
        return "<section id=\"failures\"><h2>Failures</h2><p>No failed or filtered samples.</p></section>\n"
    by_code: dict[str, int] = {}
    for r in bad:
        key = r["error_code"] or f"filtered: {r['filter_reason']}"
        by_code[key] = by_code.get(key, 0) + 1
    summary = "".join(f"<tr><td>{_e(code)}</td><td class=\"num\">{count}</td></tr>"
                      for code, count in sorted(by_code.items(), key=lambda item: (-item[1], item[0])))
    body = "".join(
        f"<tr><td>{_e(r['id'])}</td><td class=\"num\">{r['shard']:05d}</td>"
        f"<td class=\"{_e(r['status'])}\">{_e(r['status'])}</td><td>{_e(r['failed_stage'])}</td>"
        f"<td>{_e(r['error_code'] or r['filter_reason'])}</td><td>{_e(r['error_message'])}</td></tr>"
        for r in bad[:MAX_FAILURE_ROWS])
    more = (f"<p>{len(bad) - MAX_FAILURE_ROWS} more: <code>ffhq-uv failed OUT --include-filtered</code></p>"
            if len(bad) > MAX_FAILURE_ROWS else "")
    return (f"<section id=\"failures\"><h2>Failures</h2><table><tr><th>code / reason</th><th>samples</th></tr>"
            f"{summary}</table><p></p><table id=\"failure-table\"><tr><th>id</th><th>shard</th><th>status</th>"
            f"<th>stage</th><th>code / reason</th><th>message</th></tr>{body}</table>{more}</section>\n")


def _attribute_section(data: ReportData) -> str:
    charts = []
    if data.attribute_vectors is not None:
        for i, label in enumerate(ATTRIBUTE_LABELS):
            charts.append(histogram_svg(data.attribute_vectors[:, i], label))
    for f in data.rows.schema:
        if f.name.startswith("attribute_") and (pa.types.is_floating(f.type) or pa.types.is_integer(f.type)):
            charts.append(histogram_svg(_column(data.rows, f.name), f.name))
    if not charts:
        return "<section id=\"attributes\"><h2>Attributes</h2><p>The run has no attribute columns.</p></section>\n"
    return (f"<section id=\"attributes\"><h2>Attributes</h2><p>Distributions over every committed sample; "
            f"values a model could not give (NaN) are counted apart.</p>"
            f"<div class=\"charts\">{''.join(charts)}</div></section>\n")


def _metric_section(data: ReportData) -> str:
    charts = [histogram_svg(_column(data.rows, name), name) for name in _metric_columns(data.rows.schema)
              if np.isfinite(_column(data.rows, name)).any()]
    if not charts:
        return ""
    return f"<section id=\"metrics\"><h2>Quality metrics</h2><div class=\"charts\">{''.join(charts)}</div></section>\n"


def _column(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column's values for the rows that have one (null = the stage did not run; NaN is kept)."""
    return np.array([float(v) for v in table[name].to_pylist() if v is not None], dtype=np.float64)


def _timing_section(data: ReportData) -> str:
    totals: dict[str, float] = {}
    samples = 0
    for stats in data.shards.values():
        samples += stats["num_samples"]
        for name, seconds in stats.get("stage_seconds", {}).items():
            totals[name] = totals.get(name, 0.0) + seconds
    if not totals or samples == 0:
        return ""
    order = [name for name in data.run.get("stages", []) if name in totals] + sorted(
        name for name in totals if name not in data.run.get("stages", []))
    bars = bar_svg([(name, totals[name] / samples) for name in order], unit="s/sample")
    return (f"<section id=\"timing\"><h2>Stage time</h2><p>Mean wall seconds per sample in each stage "
            f"(one actor's time; a pool of N actors runs N samples at once).</p>{bars}</section>\n")


def _throughput_section(data: ReportData) -> str:
    commits = sorted((stats["committed_at"], stats["num_samples"]) for stats in data.shards.values()
                     if stats.get("committed_at"))
    if len(commits) < 2:
        return ""
    start = commits[0][0]
    points, total = [], 0
    for at, count in commits:
        total += count
        points.append(((at - start) / 60.0, total))
    span = commits[-1][0] - start
    rate = (total - commits[0][1]) / span if span > 0 else math.nan
    chart = line_svg(points, x_label="minutes since the first shard was committed", y_label="samples committed")
    started = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"<section id=\"throughput\"><h2>Throughput</h2><p>{len(commits)} shards committed from {started}; "
            f"{rate * 60:.3g} samples/min between the first and the last commit "
            f"(resumed runs show their pauses as flat steps).</p>{chart}</section>\n")


# -- charts (inline SVG) ------------------------------------------------------------------------

def histogram_svg(values: np.ndarray, title: str, bins: int = HIST_BINS, width: int = 220, height: int = 120) -> str:
    """A histogram of the finite values; NaNs are reported as 'n unavailable'."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    missing = values.size - finite.size
    note = f"{finite.size} values" + (f", {missing} unavailable" if missing else "")
    pad_x, pad_top, pad_bottom = 6, 6, 16
    plot_w, plot_h = width - 2 * pad_x, height - pad_top - pad_bottom
    shapes = []
    if finite.size:
        low, high = float(finite.min()), float(finite.max())
        if high - low < 1e-12:
            low, high = low - 0.5, high + 0.5
        counts, _ = np.histogram(finite, bins=bins, range=(low, high))
        bar_w = plot_w / bins
        peak = max(int(counts.max()), 1)
        for i, count in enumerate(counts):
            bar_h = plot_h * count / peak
            shapes.append(f"<rect x=\"{pad_x + i * bar_w:.1f}\" y=\"{pad_top + plot_h - bar_h:.1f}\" "
                          f"width=\"{max(bar_w - 1, 0.5):.1f}\" height=\"{bar_h:.1f}\" fill=\"#4c78a8\">"
                          f"<title>{count}</title></rect>")
        shapes.append(f"<text x=\"{pad_x}\" y=\"{height - 3}\">{low:.3g}</text>"
                      f"<text x=\"{width - pad_x}\" y=\"{height - 3}\" text-anchor=\"end\">{high:.3g}</text>")
    shapes.append(f"<line x1=\"{pad_x}\" y1=\"{pad_top + plot_h}\" x2=\"{width - pad_x}\" y2=\"{pad_top + plot_h}\" "
                  f"stroke=\"#999\"/>")
    return (f"<div class=\"chart\"><div><b>{_e(title)}</b> <span>{_e(note)}</span></div>"
            f"<svg width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{_e(title)}\">"
            f"{''.join(shapes)}</svg></div>")


def bar_svg(items: list[tuple[str, float]], unit: str, width: int = 560, row: int = 22) -> str:
    """Horizontal bars, one per (label, value)."""
    label_w, value_w = 110, 90
    plot_w = width - label_w - value_w
    peak = max((v for _, v in items), default=0.0) or 1.0
    height = row * len(items) + 4
    shapes = []
    for i, (label, value) in enumerate(items):
        y = 2 + i * row
        shapes.append(f"<text x=\"0\" y=\"{y + 14}\">{_e(label)}</text>"
                      f"<rect x=\"{label_w}\" y=\"{y + 3}\" width=\"{plot_w * value / peak:.1f}\" "
                      f"height=\"{row - 6}\" fill=\"#f58518\"/>"
                      f"<text x=\"{width - value_w + 6}\" y=\"{y + 14}\">{value:.3g} {_e(unit)}</text>")
    return f"<svg width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"stage time\">{''.join(shapes)}</svg>"


def line_svg(points: list[tuple[float, float]], x_label: str, y_label: str, width: int = 560,
             height: int = 220) -> str:
    """A step-free polyline chart of (x, y) points with its axis ranges labelled."""
    left, right, top, bottom = 56, 12, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_max, y_max = max(max(xs), 1e-9), max(max(ys), 1)
    coords = " ".join(f"{left + plot_w * x / x_max:.1f},{top + plot_h * (1 - y / y_max):.1f}" for x, y in points)
    dots = "".join(f"<circle cx=\"{left + plot_w * x / x_max:.1f}\" cy=\"{top + plot_h * (1 - y / y_max):.1f}\" "
                   f"r=\"2.5\" fill=\"#4c78a8\"><title>{y:g} samples at {x:.2f} min</title></circle>"
                   for x, y in points)
    axes = (f"<line x1=\"{left}\" y1=\"{top + plot_h}\" x2=\"{left + plot_w}\" y2=\"{top + plot_h}\" stroke=\"#999\"/>"
            f"<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{top + plot_h}\" stroke=\"#999\"/>"
            f"<text x=\"{left - 4}\" y=\"{top + 8}\" text-anchor=\"end\">{y_max:g}</text>"
            f"<text x=\"{left - 4}\" y=\"{top + plot_h}\" text-anchor=\"end\">0</text>"
            f"<text x=\"{left}\" y=\"{top + plot_h + 13}\">0</text>"
            f"<text x=\"{left + plot_w}\" y=\"{top + plot_h + 13}\" text-anchor=\"end\">{x_max:.3g}</text>"
            f"<text x=\"{left + plot_w / 2}\" y=\"{height - 4}\" text-anchor=\"middle\">{_e(x_label)}</text>"
            f"<text x=\"12\" y=\"{top + plot_h / 2}\" transform=\"rotate(-90 12 {top + plot_h / 2})\" "
            f"text-anchor=\"middle\">{_e(y_label)}</text>")
    return (f"<svg width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{_e(y_label)}\">{axes}"
            f"<polyline points=\"{coords}\" fill=\"none\" stroke=\"#4c78a8\" stroke-width=\"2\"/>{dots}</svg>")


# -- command line ---------------------------------------------------------------------------------

def add_report_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report`` to the main CLI's subparsers."""
    sub = subparsers.add_parser("report", help="write a static HTML report of a run (works offline)")
    sub.add_argument("output", help="the run folder or URL (local or s3://)")
    sub.add_argument("--out", help="local HTML file to write (default: OUT/report.html for a local run, "
                                   "./<run name>-report.html for a remote one)")
    sub.add_argument("--gallery", type=int, default=DEFAULT_GALLERY, metavar="N",
                     help=f"samples in the UV gallery (default {DEFAULT_GALLERY})")
    sub.add_argument("--where", metavar="SQL",
                     help="DuckDB condition choosing the gallery's samples, e.g. \"complete_valid_ratio < 0.8\"")
    sub.add_argument("--endpoint-url", help="S3-compatible endpoint for s3:// runs (MinIO, moto)")
    sub.set_defaults(report_run=run_report_command)


def run_report_command(args: argparse.Namespace) -> int:
    """Write the report and print its path."""
    options = endpoint_options(args.endpoint_url)
    storage = open_storage(args.output, options)
    out = args.out or default_report_path(storage)
    started = time.monotonic()
    path = build_report(storage, out, gallery_size=args.gallery, where=args.where)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {time.monotonic() - started:.1f}s)")
    return 0


def default_report_path(storage: Storage) -> str:
    """OUT/report.html beside a local run; ./<last path component>-report.html for a remote one."""
    if storage.is_local:
        return storage.full_path(layout.REPORT_HTML)
    return f"{Path(storage.root.rstrip('/')).name or 'run'}-report.html"
