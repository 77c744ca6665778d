"""Analysis of labelled behaviour: ethograms, time budgets, bouts, transitions, regions and group statistics.

Everything here reads the store *contract* arrays only (``annotations/*``, ``predictions/<model>/*``,
``tracks/*``, ``video/frame_times``), so it works on stores written by any version of the labelling and
classifier code. The core is pure functions over per-frame label sequences (``(T,) int``, ``-1`` = none):

- :mod:`.sequences` turns a store's annotations or predictions into per-frame labels per animal;
- :mod:`.bouts` finds bouts and time budgets (seconds from real frame times, also for variable frame rate);
- :mod:`.transitions` counts transitions between consecutive bouts and marks those above chance;
- :mod:`.regions` tags bouts with the named region the animal was in (saved under ``analysis/regions``);
- :mod:`.stats` compares groups of videos (Mann-Whitney U, Kruskal-Wallis, Dunn, Holm/BH, effect sizes), the
  groups read from a metadata table by :mod:`napari_sbl.project`;
- :mod:`.tables`, :mod:`.figures` and :mod:`.overlay` write CSV/Parquet tables, figures and overlay videos;
- :mod:`.run` is the step over many stores shared by ``napari-sbl analyze`` and the Analyze dock.
"""
