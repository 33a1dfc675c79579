"""The apps depend one way (issue 13): search builds on catalog; catalog announces changes and never imports search."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_no_catalog_module_imports_search():
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in _imported_modules(path) if m.split(".")[0] == "search")
        for path in (ROOT / "catalog").rglob("*.py")
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_search_services_do_not_import_the_tasks_that_call_them():
    assert "search.tasks" not in _imported_modules(ROOT / "search" / "services.py")
