"""The ``napari-sbl`` command line: thin verbs over the same core the widgets call."""
