"""The core package must not pull orchestration or tracking libraries."""

import subprocess
import sys

from tests.conftest import REPO

HEAVY = (
    "prefect",
    "prefect_dask",
    "dask",
    "distributed",
    "mlflow",
    "great_expectations",
    "dvc",
    "boto3",
)


def test_importing_phenexplain_does_not_import_services():
    code = (
        "import sys, phenexplain, phenexplain.cli, phenexplain.config, phenexplain.data.synthetic, "
        "phenexplain.measure.plate_summary, phenexplain.bench\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_does_not_import_torch_or_numpy_heavy_stacks():
    code = "import sys, phenexplain.cli; print('torch' in sys.modules, 'skimage' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def _module_imports() -> dict[str, set[str]]:
    """Each phenexplain module -> the phenexplain modules it imports anywhere in its source (at
    the top, under TYPE_CHECKING or inside a function)."""
    import ast
    from pathlib import Path

    import phenexplain

    root = Path(phenexplain.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_of_the_package_imports_itself_back():
    graph = _module_imports()
    assert "phenexplain.training.loop" in graph["phenexplain.training.run"]  # the parser works
    assert _cycle(graph) is None


def _third_party_imports() -> dict[str, set[str]]:
    """Each phenexplain module -> the top-level packages it imports anywhere in its source."""
    import ast
    from pathlib import Path

    import phenexplain

    root = Path(phenexplain.__file__).parent
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
        found[".".join(parts)] = names
    return found


def test_only_integrations_import_the_service_packages():
    """The boundary of the `service` extra: prefect, mlflow, dvc, great_expectations and boto3
    are imported (anywhere in a module, even inside a function) only under
    phenexplain.integrations; and the library reaches phenexplain.integrations only from the CLI,
    which checks that the package is installed first."""
    imports = _third_party_imports()
    assert "torch" in imports["phenexplain.training.loop"]  # the parser works
    assert "mlflow" in imports["phenexplain.integrations.mlflow_tracking"]
    leaks = {
        module: sorted(set(HEAVY) & names | ({"botocore"} & names))
        for module, names in imports.items()
        if not module.startswith("phenexplain.integrations")
    }
    assert {m: n for m, n in leaks.items() if n} == {}
    reaching = {
        module
        for module, targets in _module_imports().items()
        if any(t.startswith("phenexplain.integrations") for t in targets)
        and not module.startswith(("phenexplain.integrations", "phenexplain.cli"))
    }
    assert reaching == set()


BLOCK_SERVICES = f"""
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r} + ("botocore",):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from phenexplain.cli import main
sys.argv = ["phenexplain", *sys.argv[1:]]
main()
"""


def test_the_library_works_without_the_service_extra(tmp_path):
    """synth -> ingest (built-in QC) -> train -> generate with every service package missing."""

    def cli(*args: str) -> subprocess.CompletedProcess:
        args = ("--params", str(REPO / "params.yaml"), *args)
        return subprocess.run([sys.executable, "-c", BLOCK_SERVICES, *args], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)  # fmt: skip

    plate, crops, run = tmp_path / "plate", tmp_path / "crops", tmp_path / "run"
    steps = [
        ("synth", str(plate), "--assay", "nfkb", "--wells-per-condition", "1",
         "--sites-per-well", "2", "--height", "512", "--width", "512", "--workers", "1"),
        ("ingest", str(plate), str(crops), "--channels", "DNA,NFkB", "--conditions",
         "control,TNF", "--workers", "1"),
        ("train", str(crops), "--run-dir", str(run), "--kimg", "0.032", "--tick-kimg", "0.016"),
        ("generate", str(run), str(tmp_path / "images"), "--condition", "TNF", "--seeds", "0-1"),
    ]  # fmt: skip
    for args in steps:
        result = cli(*args)
        assert result.returncode == 0, f"{args[0]}: {result.stderr[-2000:]}"
    assert (
        "great-expectations is not installed"
        in cli(
            "ingest",
            str(plate),
            str(tmp_path / "again"),
            "--channels",
            "DNA,NFkB",
            "--workers",
            "1",
        ).stderr
    )
    assert len(list((tmp_path / "images").glob("*.tif"))) == 2
