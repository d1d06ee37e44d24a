"""``ffhq-uv report``: the HTML report of a real run, checked as HTML and in headless Chromium.

Chromium (Debian's ``chromium`` package) is driven through its DevTools protocol
over a websocket (aiohttp, which Ray already depends on): the test loads the page,
collects console messages, uncaught exceptions and failed loads, and asks the page
for every <img> and whether it decoded.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.manifest import read_manifest
from pipeline.report import ATTRIBUTE_LABELS
from tests.conftest import cli_env, run_cli
from tests.report_doubles import produce_run

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-debugging-port=0", "--remote-allow-origins=*"]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("needs chromium: not installed (Debian: apt-get install -y chromium)")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return produce_run(tmp_path_factory.mktemp("report"))


class _Page(HTMLParser):
    """The report's images (with the id of the card they are in), table cells and chart titles."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str, str]] = []  # (card id, alt, src)
        self.cards: list[str] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self._card = ""
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "div" and attributes.get("class") == "card":
            self._card = attributes["id"].removeprefix("sample-")
            self.cards.append(self._card)
        if tag == "img":
            self.images.append((self._card, attributes.get("alt", ""), attributes.get("src", "")))
        self._in_cell = tag == "td"

    def handle_data(self, data):
        self.text.append(data)
        if self._in_cell:
            self.cells.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/jpeg;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"), dtype=np.int16)


def _blocks(image: np.ndarray, size: int = 8) -> np.ndarray:
    """Mean colour of each size x size block (what JPEG keeps of random noise)."""
    h, w = image.shape[0] // size * size, image.shape[1] // size * size
    return image[:h, :w].reshape(h // size, size, w // size, size, -1).mean(axis=(1, 3))


def test_report_contents(finished_run):
    output: Path = finished_run["output"]
    result = run_cli(["report", str(output)])
    report = output / "report.html"
    assert result.stdout.startswith(f"wrote {report}")
    page = _parse(report)
    rows = {r["id"]: r for r in read_manifest(str(output)).to_pylist()}
    ok = sorted(i for i, r in rows.items() if r["status"] == "ok")
    assert ok == sorted(set(finished_run["ids"]) - {"img_002"})

    # Gallery: one card per ok sample, each with its source photo, UV map and preview, all embedded.
    assert page.cards == ok
    for sample_id in ok:
        images = {alt: src for card, alt, src in page.images if card == sample_id}
        assert set(images) == {"source photo", "uv", "preview"}
        uv = np.asarray(Image.open(output / dict(rows[sample_id]["outputs"])["uv"]["path"]), dtype=np.int16)
        assert np.abs(_blocks(_decode(images["uv"])) - _blocks(uv)).max() < 8  # the same 64x64 map, through JPEG
        source = np.asarray(Image.open(finished_run["root"] / "in" / f"{sample_id}.png"), dtype=np.int16)
        assert _decode(images["source photo"]).shape == source.shape  # 96x80 is below the thumbnail size
    assert all(src.startswith("data:image/jpeg;base64,") for _, _, src in page.images)

    # Failures: both failed samples with stage, code and message.
    text = " ".join(page.text)
    assert "img_002" in page.cells and "broken" in page.cells
    assert "test_failure" in page.cells and "not_an_image" in page.cells
    assert "relight was told to fail img_002" in page.cells

    # Attribute histograms: the 17 named values; Age is unavailable for img_001 (the double's NaN).
    for label in ATTRIBUTE_LABELS:
        assert label in page.text
    assert "8 values, 1 unavailable" in text
    assert "complete_valid_ratio" in page.text  # quality-metric histogram and card metric
    # Stage time and throughput from the 4 committed shards.
    assert re.search(r"4 shards committed from \d{4}-\d\d-\d\d", text)
    for stage in ("attribute", "relight", "complete"):
        assert re.search(rf"{stage}\s*[0-9.e-]+ s/sample", text)


def test_report_gallery_where_and_size(finished_run, tmp_path):
    output: Path = finished_run["output"]
    rows = read_manifest(str(output)).to_pylist()
    threshold = float(np.median([r["complete_valid_ratio"] for r in rows if r["complete_valid_ratio"] is not None]))
    chosen = sorted(r["id"] for r in rows if r["complete_valid_ratio"] is not None
                    and r["complete_valid_ratio"] < threshold)
    out = tmp_path / "low.html"
    run_cli(["report", str(output), "--out", str(out), "--where", f"complete_valid_ratio < {threshold}"])
    assert _parse(out).cards == chosen
    run_cli(["report", str(output), "--out", str(out), "--gallery", "3"])
    assert len(_parse(out).cards) == 3


def test_report_of_an_s3_run_is_written_locally(finished_run, s3_bucket, tmp_path):
    endpoint, bucket, fs = s3_bucket
    fs.put(str(finished_run["output"]) + "/", f"{bucket}/runs/r1/", recursive=True)
    fs.rm(f"{bucket}/runs/r1/shards/00000/samples/img_000/uv.png")  # a map deleted after the run
    env = cli_env(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    out = tmp_path / "s3-report.html"
    result = run_cli(["report", f"s3://{bucket}/runs/r1", "--endpoint-url", endpoint, "--out", str(out)], env)
    assert result.stdout.startswith(f"wrote {out}")
    local = _parse(finished_run["output"] / "report.html") if (finished_run["output"] / "report.html").exists() \
        else None
    page = _parse(out)
    assert len(page.cards) == 8 and all(src.startswith("data:") for _, _, src in page.images)
    assert len(page.images) == 3 * 8 - 1 and "uv: unavailable" in page.text
    assert {alt for card, alt, _ in page.images if card == "img_000"} == {"source photo", "preview"}
    if local is not None:
        assert page.cards == local.cards
    assert f"s3://{bucket}/runs/r1" in " ".join(page.text)


# -- headless Chromium ---------------------------------------------------------------------------

async def _inspect(url: str, user_data_dir: Path, timeout_s: float = 60.0) -> dict:
    """Load ``url`` in headless Chromium; return its images and every error the page logged."""
    import aiohttp

    process = subprocess.Popen([chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}",
                                "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = user_data_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, "chromium exited at start-up"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                return await asyncio.wait_for(_load_and_inspect(ws, url), timeout_s)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _load_and_inspect(ws, url: str) -> dict:
    """Navigate to ``url``, wait until the document has loaded, then list its images.

    The load is detected by polling ``document.readyState`` at the new location rather than by
    waiting for one ``Page.loadEventFired``: on a loaded CI machine that event can be missed when
    the initial about:blank load is still settling as the navigation starts, and the test then
    timed out on a page that had loaded.
    """
    next_id = 0
    errors: list[str] = []
    results: dict[int, asyncio.Future] = {}

    async def call(method: str, **params) -> dict:
        nonlocal next_id
        next_id += 1
        answer = results[next_id] = asyncio.get_running_loop().create_future()
        await ws.send_str(json.dumps({"id": next_id, "method": method, "params": params}))
        return await answer

    async def evaluate(expression: str):
        reply = await call("Runtime.evaluate", expression=expression, returnByValue=True)
        return reply.get("result", {}).get("result", {}).get("value")

    async def reader() -> None:
        async for message in ws:
            event = json.loads(message.data)
            if "id" in event and event["id"] in results:
                results[event["id"]].set_result(event)
            method = event.get("method")
            params = event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append("exception: " + params["exceptionDetails"].get("text", ""))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(f"log ({params['entry']['source']}): {params['entry']['text']}")

    task = asyncio.create_task(reader())
    try:
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            await call(method)
        navigated = await call("Page.navigate", url=url)
        assert "errorText" not in navigated.get("result", {}), navigated
        while await evaluate(f"location.href === {json.dumps(url)} && document.readyState === 'complete'") is not True:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # late console messages
        images = json.loads(await evaluate(
            "JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, src: i.src.slice(0, 40), "
            "complete: i.complete, width: i.naturalWidth})))"))
    finally:
        task.cancel()
    return {"images": images, "errors": errors}


def test_report_in_headless_chromium(finished_run, tmp_path):
    chromium_binary()
    output: Path = finished_run["output"]
    report = tmp_path / "report.html"
    run_cli(["report", str(output), "--out", str(report)])
    seen = asyncio.run(_inspect(report.as_uri(), tmp_path / "profile"))
    assert len(seen["images"]) == 3 * 8
    broken = [i for i in seen["images"] if not (i["complete"] and i["width"] > 0)]
    assert broken == [] and seen["errors"] == []

    # The same check on a damaged copy finds the damage: a missing file and a script error.
    damaged = tmp_path / "damaged.html"
    damaged.write_text(report.read_text().replace(
        "</body>", "<img src=\"missing.png\" alt=\"gone\"><script>console.error('boom')</script></body>"))
    seen = asyncio.run(_inspect(damaged.as_uri(), tmp_path / "profile2"))
    assert [i["alt"] for i in seen["images"] if not (i["complete"] and i["width"] > 0)] == ["gone"]
    assert any("boom" in e for e in seen["errors"])
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in seen["errors"]), seen["errors"]
