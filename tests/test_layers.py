"""The rooms of the house, lowest first: no module imports from a room above its own.

Every module of liroo/ is parsed (ast, nothing imported) and given the room of the longest
prefix in ROOMS that names it; an import of a module in a higher room fails. Imports under
``if TYPE_CHECKING:`` are names for annotations, not imports, and are not counted. Imports
inside functions are counted: they are imports all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

LIROO = Path(__file__).resolve().parent.parent / "liroo"

# Lowest first. A package's name covers its modules unless a longer name is listed.
ROOMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # A library: imports nothing from Flask or the rest of Liroo.
    ("governor", ("liroo.governor",)),
    # Leaves every room may use: pure logic, settings, and what the app and the worker say to
    # each other (the error answer, the worker's contract).
    (
        "foundation",
        (
            "liroo.clock",
            "liroo.settings",
            "liroo.outage",
            "liroo.shared_sqlite",
            "liroo.framing",
            "liroo.audio",
            "liroo.imaging",
            "liroo.error_answer",
            "liroo.worker_contract",
            "liroo.storage.health",
        ),
    ),
    # What several rooms share: the failures they raise (generation's context, providers' and
    # storage's bases), the generation's options and timings, the services and the counters.
    (
        "shared kinds",
        (
            "liroo.services",
            "liroo.metrics",
            "liroo.storage.base",
            "liroo.providers.base",
            "liroo.generation.context",
            "liroo.generation.timing",
            "liroo.generation.options",
        ),
    ),
    # Every route's facts and the request models they name, request ids.
    ("routes", ("liroo.routes", "liroo.api.models", "liroo.requestid")),
    # The one exception -> answer table (generation's item failures read it too).
    ("errors", ("liroo.errors",)),
    ("resources", ("liroo.storage", "liroo.providers", "liroo.jobs", "liroo.ratelimits")),
    ("generation", ("liroo.generation",)),
    # The app: blueprints, monitoring, security, the page, create_app, gunicorn's hooks.
    (
        "app",
        (
            "liroo",
            "liroo.api",
            "liroo.monitoring",
            "liroo.media",
            "liroo.security",
            "liroo.limiter",
            "liroo.logs",
            "liroo.studio",
            "liroo.gunicorn_hooks",
        ),
    ),
    # gunicorn's worker: above the app, so that nothing of the app imports it (worker_contract
    # is what they share).
    ("worker", ("liroo.server", "liroo.outgoing", "liroo.thread_io")),
)

# Imports that climb on purpose: (importer, imported) -> why.
EXCEPTIONS = {
    ("liroo.metrics", "liroo.generation.images"): (
        "/metrics publishes the learned costs of pictures, imported when the gauges are first "
        "read; the counters metrics defines are used from rooms below generation"
    ),
    ("liroo.metrics", "liroo.generation.speech"): "the same, for speech chunks",
}

_RANK = {prefix: rank for rank, (_, prefixes) in enumerate(ROOMS) for prefix in prefixes}


def room_of(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        rank = _RANK.get(".".join(parts[:end]))
        if rank is not None:
            return rank
    raise AssertionError(f"{module} is in no room: add it to ROOMS")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIROO.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _exists(module: str) -> bool:
    path = LIROO.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for child in node.body for inner in ast.walk(child))
    return skipped


def imports_of(path: Path) -> set[str]:
    """The liroo modules ``path`` imports (``from .x import name`` counts module x.name when it
    is one, else x)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("liroo"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            if not base_name.startswith("liroo"):
                continue
            for alias in node.names:
                name = f"{base_name}.{alias.name}"
                found.add(name if _exists(name) else base_name)
    return found


def climbing_imports() -> list[str]:
    climbs = []
    for path in sorted(LIROO.rglob("*.py")):
        importer = module_name(path)
        for imported in sorted(imports_of(path)):
            if room_of(imported) > room_of(importer) and (importer, imported) not in EXCEPTIONS:
                climbs.append(
                    f"{importer} ({ROOMS[room_of(importer)][0]}) imports {imported} "
                    f"({ROOMS[room_of(imported)][0]})"
                )
    return climbs


def test_every_module_has_a_room():
    for path in LIROO.rglob("*.py"):
        room_of(module_name(path))


def test_no_import_climbs_to_a_higher_room():
    assert climbing_imports() == []


def test_the_listed_exceptions_are_still_there():
    """An exception no longer needed is removed from the list, so the list stays the truth."""
    for importer, imported in EXCEPTIONS:
        path = LIROO.parent.joinpath(*importer.split("."))
        path = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
        assert imported in imports_of(path), (importer, imported)
        assert room_of(imported) > room_of(importer), (importer, imported)


def test_the_governor_imports_nothing_of_the_app():
    """A library any WSGI app can use: nothing of Liroo outside it, nothing of Flask."""
    for path in (LIROO / "governor").rglob("*.py"):
        assert all(name.startswith("liroo.governor") for name in imports_of(path)), path
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] in ("flask", "werkzeug") for name in names), path
