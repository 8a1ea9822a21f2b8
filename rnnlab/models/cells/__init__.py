"""Recurrent cells, one module each, found by name in one registry (see ``base.py``).

To add a cell: write a module here with a ``Cell`` subclass decorated with ``@register`` (its maths,
its stack when it has one of its own, its parameter count and cost per token: ``Cell.parameter_count``,
``Cell.flops_per_token``) and one test. Every module of this package is imported here, so nothing
else changes: ``tests/test_toy_cell.py`` registers a cell with its own stack and cost in the test file
itself and shows the default recipe sizing it, training and generating; ``tests/test_every_cell.py``
walks every cell of the registry through every command.
"""
import importlib
import pkgutil

from .base import Cell, CellState, Params, TupleState, cell_names, get_cell, register

ORDER = ("rnn", "gru", "lstm", "mingru", "minlstm")  # --help's order; any other cell module registers after these
for _module in ORDER + tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in ORDER + ("base",))):
    importlib.import_module(f"{__name__}.{_module}")

RECOMMENDED = get_cell("lstm").name  # the default recipe's cell (measured: rnnlab/recipes.py, benchmarks/budget.py)

__all__ = ["RECOMMENDED", "Cell", "CellState", "Params", "TupleState", "cell_names", "get_cell", "register"]
