"""Behaviour: the labels people make and the classifiers that learn from them.

Annotation lives in ``classes`` (class lists and the project file), ``annotations`` (per-frame
labels, the truth, with undo), ``annotation_store`` (crash-safe save/load in the session store) and
``annotation_readers`` (CSV, BORIS and seed files read into rows) with ``annotation_io`` (checked import,
CSV export); the classifier modules build on those labels.
"""
