"""nbqueue's benchmark against its peers.

``python -m bench`` runs every workload for nbqueue and for each peer that is installed
(``pip install -e ".[bench]"``), each system in a subprocess of its own, and prints a
markdown table with absolute figures and ratios against ``ProcessPoolExecutor``. See
``python -m bench --help`` and the "Performance" section of the README.

Layout: ``run.py`` is the runner and the table; ``common.py`` holds the sizes, the timing
method and process cleanup shared by the ``sys_*.py`` scripts (one per system);
``tasks.py`` holds the task functions every system runs; ``profile_nbqueue.py`` profiles
nbqueue's controller with pyinstrument.
"""
