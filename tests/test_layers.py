"""The package's layers (README, Architecture): every import points down, never up.

Each module is given the layer of the README's diagram; an import of a module of a higher layer
fails the test (imports inside functions count too: a lazy import is still a dependency)."""
import ast
from pathlib import Path

import rnnlab

ROOT = Path(rnnlab.__file__).parent
LAYERS = [  # bottom first
    ["version", "errors", "io", "fields", "metrics", "runtime"],
    ["models"],
    ["config"],
    ["data"],
    ["precision"],
    ["decoding", "evaluation", "adaptation", "distributed", "callbacks", "schedule", "timing", "evalpoints",
     "position", "checkpoint", "trainer_state", "training"],
    ["runs", "recipes", "speed", "ratebook"],
    ["plan", "gather"],
    ["suggest", "export"],
    ["keyboard"],
    ["pipeline"],
    ["cli_args", "serve", "cli_chats", "cli_inference", "cli", "__main__", "__init__"],
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _top(module: Path) -> str:
    rel = module.relative_to(ROOT).parts
    return rel[0] if len(rel) > 1 else module.stem


def _imports(module: Path):
    """The top-level rnnlab names a module imports (absolute ``rnnlab.x`` or relative)."""
    tree = ast.parse(module.read_text())
    depth = len(module.relative_to(ROOT).parts) - 1  # 0 for rnnlab/x.py, 1 for rnnlab/pkg/x.py
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] == "rnnlab":
                parts = node.module.split(".")[1:]
            elif node.level:
                up = node.level - 1
                if up > depth:
                    continue
                base = list(module.relative_to(ROOT).parts[:-1])[: depth - up]
                parts = base + (node.module.split(".") if node.module else [a.name for a in node.names][:1])
            else:
                continue
            if parts:
                yield parts[0], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "rnnlab" and len(a.name.split(".")) > 1:
                    yield a.name.split(".")[1], node.lineno


def test_every_module_has_a_layer():
    tops = {_top(p) for p in ROOT.rglob("*.py")}
    assert tops <= set(LEVEL), sorted(tops - set(LEVEL))


def test_no_import_runs_back_up_the_layers():
    up = []
    for module in ROOT.rglob("*.py"):
        me = _top(module)
        for target, line in _imports(module):
            if target in LEVEL and target != me and LEVEL[target] > LEVEL[me]:
                up.append(f"{module.relative_to(ROOT)}:{line} imports {target}")
    assert up == []
