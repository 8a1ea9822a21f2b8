"""The cells rnnlab ships. A test module may register a toy cell of its own (tests/test_toy_cell.py
does, at import): tests that loop over the registry loop over these, so their outcome does not
depend on which test files were collected before them."""
from rnnlab.models.cells import cell_names, get_cell


def shipped_cells() -> list[str]:
    return [name for name in cell_names() if type(get_cell(name)).__module__.startswith("rnnlab.")]
