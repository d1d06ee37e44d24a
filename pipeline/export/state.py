"""Resume bookkeeping of an export, kept at the destination under ``_export/``.

``_export/state.json`` names the format, the options and the fingerprint of the
selected samples (their ids in order); a re-run with another selection or options is
refused, since clip, shard and file numbers would shift. ``_export/done/<unit>.json``
is written after the last file of a unit (a clip, an image group, a tar shard), so a
re-run skips finished units; inside an unfinished unit, files already at the
destination with their final size are not written again.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.storage import Storage
from stages.errors import ConfigError

STATE = "_export/state.json"
DONE = "_export/done"


class ExportState:
    """Which units of an export are finished at ``dest``."""

    def __init__(self, dest: Storage, identity: dict[str, Any]):
        self.dest = dest
        if dest.exists(STATE):
            previous = json.loads(dest.read_bytes(STATE))
            if previous != identity:
                changed = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
                raise ConfigError(f"{dest.root_url} holds an export with different {', '.join(changed)}; export "
                                  "to another destination or delete it")
        else:
            dest.write_bytes(STATE, json.dumps(identity, indent=1, sort_keys=True).encode())
        self.finished = {path.rsplit("/", 1)[-1][: -len(".json")] for path in dest.glob(f"{DONE}/*.json")}

    def is_done(self, unit: str) -> bool:
        return unit in self.finished

    def mark_done(self, unit: str, record: dict[str, Any]) -> None:
        self.dest.write_bytes(f"{DONE}/{unit}.json", json.dumps(record, sort_keys=True).encode())
        self.finished.add(unit)
