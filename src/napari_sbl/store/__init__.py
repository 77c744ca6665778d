"""The zarr session store beside each video: one home for every result and its provenance."""

from napari_sbl.store.session import SCHEMA_VERSION, SessionStore, default_store_path

__all__ = ["SCHEMA_VERSION", "SessionStore", "default_store_path"]
