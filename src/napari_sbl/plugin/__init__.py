"""napari entry points named in napari.yaml: reader and sample data (no Qt here)."""
