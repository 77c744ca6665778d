"""Reading the small JSON files users hand us (prompts, regions, projects) with errors that name them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from napari_sbl.errors import SblError


def read_json_file(path: str | Path, kind: str, error: type[SblError]) -> Any:
    """The parsed content of ``path``; a missing or malformed file raises ``error`` naming the ``kind`` of file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise error(f"{kind} file {path} does not exist") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{kind} file {path} is not valid JSON: {err}") from err
