"""napari dock widgets (the only Qt code): views over the core, no science here."""
