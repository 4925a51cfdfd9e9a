"""Typing stubs for a task directory: the task types as a ``Literal`` and each executor's
data and result types, read from its ``TaskExecutor[DataT, ResultT]`` parameters.

``Queue.init()`` calls :func:`generate` unless ``NBQUEUE_GENERATE_TYPES=false``. The stub,
``_nbqueue_types.pyi``, is rewritten only when the task files change: a content hash of
them is kept in ``.nbqueue-types.hash`` next to it.

:mod:`~nbqueue.typegen.files` writes the stub and the hash; :mod:`~nbqueue.typegen.stub`
lays out the stub's text; :mod:`~nbqueue.typegen.annotations` turns the type objects found
at runtime into stub source.
"""

from nbqueue.typegen.files import generate

__all__ = ["generate"]
