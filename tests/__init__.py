"""Makes the top-level test modules ``tests.<name>`` for pytest's default ("prepend") import mode, so that
``tests/test___main__.py`` (``xlprune_lib/__main__.py``) and ``tests/book/test___main__.py``
(``xlprune_lib/book/__main__.py``) do not clash as two modules named ``test___main__``. The sub-folders stay
without ``__init__.py``: their modules keep their bare names, so sibling imports (``from test_warmstart import``)
and ``from conftest import`` / ``from test_cli import`` (``pythonpath = ["tests"]``) work as before."""
