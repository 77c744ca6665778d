"""Behaviour: the labels people make and the classifiers that learn from them.

Annotation lives in ``classes`` (class lists and the project file), ``annotations`` (per-frame
labels, the truth, with undo), ``annotation_store`` (crash-safe save/load in the session store) and
``annotation_io`` (CSV, BORIS and seed import/export); the classifier modules build on those labels.
"""
