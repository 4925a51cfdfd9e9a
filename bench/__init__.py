"""nbqueue's benchmark against its peers.

``python -m bench`` runs every workload for nbqueue and for each peer that is installed
(``pip install -e ".[bench]"``), each system in a subprocess of its own, and prints a
markdown page with absolute figures, ratios against ``ProcessPoolExecutor`` and the targets.
See ``python -m bench --help`` and the "Performance" section of the README.

Layout: ``run.py`` runs the systems (``entries.py`` lists them and their interleaved groups;
``environment.py`` checks what can run here); ``table.py``, ``sections.py`` and
``targets.py`` write the page from the results (``figures.py`` reads figures and ratios out
of them). ``common.py`` holds the sizes, the timing method and process cleanup shared by the
``sys_*.py`` scripts (one per system; ``nbqueue_*.py``, ``pg.py``, ``dask_cluster.py`` and
``shared_input.py`` are their parts, ``*_app.py`` the peers' worker modules); ``tasks.py``
holds the task functions every system runs; ``profile_nbqueue.py`` profiles nbqueue's
controller with pyinstrument.
"""
