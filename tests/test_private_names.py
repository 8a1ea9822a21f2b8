"""No module reads another module's private names: no ``from .x import _name`` of an rnnlab
module, and no ``obj._attr`` on anything but ``self``/``cls`` (a few private attributes of
third-party objects are named below, with where they are read)."""
import ast
from pathlib import Path

import rnnlab

ROOT = Path(rnnlab.__file__).parent
THIRD_PARTY = {"_version",  # torch.Tensor._version (models/rnnlm.py: has a weight changed in place?)
               "_randbelow"}  # random.Random._randbelow (data/batching.py: the book's exact draws)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_reads_another_modules_private_names():
    found = []
    for module in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(module.read_text())
        where = module.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("rnnlab")):
                found += [f"{where}:{node.lineno} imports {a.name}" for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in THIRD_PARTY:
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                    found.append(f"{where}:{node.lineno} reads .{node.attr}")
    assert found == []
