"""Recurrent cells, one module each, found by name in one registry (see ``base.py``).

To add a cell: write a module here with a ``Cell`` subclass decorated with ``@register``, import it
below, and test it against a reference loop (``tests/test_cells.py``). Nothing else changes.
"""
from . import rnn, gru, lstm, mingru, minlstm  # noqa: F401, I001  (each registers its cell; this order is --help's)
from .base import Cell, CellState, Params, TupleState, cell_names, get_cell, register

RECOMMENDED = lstm.LSTMCell.name  # the default recipe's cell (measured: rnnlab/recipes.py, benchmarks/budget.py)

__all__ = ["RECOMMENDED", "Cell", "CellState", "Params", "TupleState", "cell_names", "get_cell", "register"]
