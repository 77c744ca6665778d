"""napari-sbl: from raw animal video to behaviour, inside napari.

Importing the package is cheap on purpose: napari loads the manifest at start-up, and
heavy libraries (torch, jax, sam2, napari itself) are imported only by the code that needs them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
