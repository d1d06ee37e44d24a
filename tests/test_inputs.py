"""Listing inputs and planning shards: folders, globs, list files, FFHQ's layout, builtin samples."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import layout
from pipeline.inputs import list_inputs, make_plan
from pipeline.storage import open_storage
from stages.errors import ConfigError
from tests.conftest import write_images

EXTENSIONS = [".png", ".jpg"]


def test_folder_listing_is_recursive_filtered_and_sorted(tmp_path):
    write_images(tmp_path / "in" / "b", 3, prefix="b")
    write_images(tmp_path / "in" / "a", 2, prefix="a")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    pairs = list_inputs(str(tmp_path / "in"), "auto", EXTENSIONS, open_storage(str(tmp_path / "out")))
    plan = make_plan(pairs, shard_size=2)
    assert plan.table["id"].to_pylist() == ["a000", "a001", "b000", "b001", "b002"]
    assert plan.table["shard"].to_pylist() == [0, 0, 1, 1, 2]
    assert plan.num_shards == 3 and plan.shard_table(2)["id"].to_pylist() == ["b002"]
    assert all(uri.startswith(str(tmp_path / "in")) for uri in plan.table["uri"].to_pylist())


def test_glob_source(tmp_path):
    write_images(tmp_path / "in", 4)
    pairs = list_inputs(str(tmp_path / "in" / "img_00[12].png"), "auto", EXTENSIONS, open_storage(str(tmp_path)))
    assert sorted(pairs["id"].to_pylist()) == ["img_001", "img_002"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_list_file_with_relative_uris_and_duplicates(tmp_path, suffix):
    write_images(tmp_path / "photos", 3)
    table = pa.table({"id": ["z", "a", "a", "../escape", "ünï"],
                      "uri": ["photos/img_000.png", "photos/img_001.png", "photos/img_002.png",
                              str(tmp_path / "photos" / "img_000.png"), "photos/img_001.png"]})
    listing = tmp_path / f"list{suffix}"
    if suffix == ".csv":
        listing.write_text("id,uri\n" + "\n".join(f"{i},{u}" for i, u in zip(*table.to_pydict().values())) + "\n")
    else:
        pq.write_table(table, listing)
    plan = make_plan(list_inputs(str(listing), "auto", EXTENSIONS, open_storage(str(tmp_path))), shard_size=10)
    rows = plan.table.to_pylist()
    assert [r["id"] for r in rows] == ["../escape", "a", "a", "z", "ünï"]
    assert [r["duplicate"] for r in rows] == [False, False, True, False, False]
    assert rows[1]["uri"] == str(tmp_path / "photos" / "img_001.png")  # resolved against the list's folder
    # Hostile ids never become paths outside their shard.
    for row in rows:
        folder = layout.sample_dir(0, row["id"])
        assert folder.startswith("shards/00000/samples/") and ".." not in folder.split("/")


def test_ffhq_layout(tmp_path):
    root = tmp_path / "images1024x1024"
    write_images(root / "00000", 3, prefix="00")
    pairs = list_inputs(str(root), "ffhq", EXTENSIONS, open_storage(str(tmp_path)))
    assert sorted(pairs["id"].to_pylist()) == ["00000", "00001", "00002"]
    write_images(root / "00000", 1, prefix="x")
    with pytest.raises(ConfigError, match="not FFHQ's layout"):
        list_inputs(str(root), "ffhq", EXTENSIONS, open_storage(str(tmp_path)))


def test_builtin_samples_are_copied_into_the_run(tmp_path):
    storage = open_storage(str(tmp_path))
    pairs = list_inputs("builtin:samples", "auto", EXTENSIONS, storage)
    assert pairs["id"].to_pylist() == ["astronaut", "grace_hopper"]
    assert (tmp_path / "inputs" / "astronaut.png").stat().st_size > 100_000


def test_fingerprint_follows_ids_uris_and_shard_size(tmp_path):
    pairs = pa.table({"id": ["b", "a"], "uri": ["/x/b.png", "/x/a.png"]})
    base = make_plan(pairs, shard_size=5).fingerprint
    assert make_plan(pairs.take([1, 0]), shard_size=5).fingerprint == base  # order of listing does not matter
    assert make_plan(pairs, shard_size=6).fingerprint != base
    assert make_plan(pa.table({"id": ["b", "a"], "uri": ["/y/b.png", "/x/a.png"]}), 5).fingerprint != base
    assert make_plan(pairs, shard_size=5, limit=1).table["id"].to_pylist() == ["a"]


def test_empty_or_missing_inputs_are_config_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no input images found"):
        list_inputs(str(tmp_path / "empty"), "auto", EXTENSIONS, open_storage(str(tmp_path)))
    with pytest.raises(ConfigError, match="does not exist"):
        list_inputs(str(tmp_path / "missing.csv"), "auto", EXTENSIONS, open_storage(str(tmp_path)))
    bad = tmp_path / "bad.csv"
    bad.write_text("name,path\nx,y\n")
    with pytest.raises(ConfigError, match="columns id,uri"):
        list_inputs(str(bad), "auto", EXTENSIONS, open_storage(str(tmp_path)))
