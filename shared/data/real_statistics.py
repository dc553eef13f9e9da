"""The committed statistics of real annotation tables (real_statistics.json, written by
twinray.shared.data.real_tables), readable without pandas or torchxrayvision: the phantoms cite them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STORED_JSON = Path(__file__).with_name("real_statistics.json")


def stored_real_statistics() -> dict[str, Any]:
    """The committed real_statistics.json (4 significant digits)."""
    return json.loads(STORED_JSON.read_text())
