"""placeholder"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_report(path: Path, doc: dict[str, Any], history: list[dict[str, Any]]) -> None:
    path.write_text("<html></html>")
