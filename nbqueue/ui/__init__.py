"""Presentation: everything nbqueue shows, in one package.

- :mod:`~nbqueue.ui.figures`: the one definition of each figure shown anywhere (counts per
  status, percent finished, elapsed time, error text shortening, ...).
- :mod:`~nbqueue.ui.html` and :mod:`~nbqueue.ui.text`: those figures as HTML (notebooks) and
  as terminal text (the command line, ``print(queue.dashboard())``).
- :mod:`~nbqueue.ui.frame`: the status table as a pandas DataFrame.
- :mod:`~nbqueue.ui.widgets`, :mod:`~nbqueue.ui.dashboard`: live ipywidgets views, redrawn
  by :mod:`~nbqueue.ui.throttle` on a thread of their own.
- :mod:`~nbqueue.ui.views`: what ``queue.dashboard()`` and ``%nbqueue status`` return.
- :mod:`~nbqueue.ui.formatters`, :mod:`~nbqueue.ui.magics`: the IPython integration.

The arrow points one way: the task model and the queue know nothing of this package (they
call into it for ``status_frame()`` and ``dashboard()``); modules here read tasks through
their public state, mostly as :class:`~nbqueue.task.TaskStatus` snapshots, and import the
model's types only for type checking. This ``__init__`` imports nothing, so that importing
one part never loads the others (pandas, ipywidgets, IPython).
"""
