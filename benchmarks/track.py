"""The tracking benchmark under the name the tracking issue gives it: ``track_sam2.py`` with the same arguments.

    python benchmarks/track.py --models tiny large --frames 300 1000 3000 --out benchmarks/results/track_run.md

fps and peak GPU/host memory against frames, ours and SAM2's own video predictor side by side, per model size,
the device named in the report (see ``track_sam2.py`` for the implementations and options).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from track_sam2 import main

if __name__ == "__main__":
    main()
