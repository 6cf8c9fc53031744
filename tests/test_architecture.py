"""The house's rules, checked on the source: imports point down with no cycle (function-level imports
included), the CLI stays thin, and no function grows past 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "semshare"
MAX_FUNCTION_LINES = 60
MAX_CLI_FILE_LINES = 350
# packages that sit below the Python API and the command line: none of them may import either
LOWER_PACKAGES = ("search", "index", "training", "methods", "data", "evaluation")


def _module_name(path: Path) -> str:
    parts = ("semshare",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every semshare module `path` imports, at module level or inside a function."""
    found = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(SRC.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports(p, modules) - {_module_name(p)} for p in paths}
    # `import semshare.x.y` also runs the packages above it; a package's own __init__ is not an edge to itself
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, " -> ".join(cycle)


def test_a_cycle_is_found_when_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_lower_layer_imports_the_api_or_the_cli():
    upward = [f"{module} -> {dep}" for module, deps in import_graph().items()
              if module.count(".") and module.split(".")[1] in LOWER_PACKAGES
              for dep in deps if dep == "semshare.api" or dep.startswith("semshare.cli")]
    assert not upward, "\n".join(upward)


def test_cli_files_stay_short():
    long_files = {p.name: n for p in (SRC / "cli").glob("*.py") if (n := len(p.read_text().splitlines())) > MAX_CLI_FILE_LINES}
    assert not long_files, long_files


def test_no_function_is_longer_than_60_lines():
    long_functions = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long_functions, "\n".join(long_functions)


def test_the_command_line_and_every_subcommands_help_start_without_torch():
    """`semshare --help` and `semshare CMD --help` only read argparse and the YAML recipe names: no torch, NumPy
    or other heavy import (they took ~1.8 s when the parser imported the methods to list their names). The two
    helps drawn from a registry (`import`'s formats and flags, `index build`'s backends) import the registry's
    modules, which import NumPy (~0.1 s), and nothing heavier."""
    import subprocess
    import sys

    probe = """
import contextlib, io, sys
from semshare.cli.main import build_parser
HEAVY = ("torch", "numpy", "scipy", "sklearn", "faiss", "fastapi", "gensim", "matplotlib")
def helps(argvs):
    for argv in argvs:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                build_parser().parse_args(argv)
            except SystemExit:
                pass
    return [m for m in HEAVY if m in sys.modules]
commands = list(build_parser()._subparsers._group_actions[0].choices)
plain = helps([["--help"]] + [[c, "--help"] for c in commands if c not in ("import", "index")] + [["index", "--help"]])
registry = helps([["import", "--help"], ["import", "coco", "--help"], ["index", "build", "--help"]])
print(len(commands), plain, registry)
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    count, plain, registry = result.stdout.strip().split(" ", 2)
    assert int(count) >= 18 and plain == "[]" and registry == "['numpy']", result.stdout


def _function_definitions():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def test_there_is_one_load_run():
    """One loader of a finished run (training/experiment.py), which the CLI, the API, the service, evaluation
    and the benchmark all call."""
    definitions = [f"{path.relative_to(SRC)}:{node.lineno}" for path, node in _function_definitions()
                   if node.name in ("load_run", "load_run_from_folder", "load_run_of_folder")]
    assert definitions == ["training/experiment.py:" + definitions[0].split(":")[1]], definitions


def test_no_attribute_forwarding_in_training_or_search():
    """A run says what it can do; nothing forwards every attribute to another object (a `__getattr__` proxy)."""
    proxies = [f"{path.relative_to(SRC)}:{node.lineno}" for path, node in _function_definitions()
               if node.name == "__getattr__" and path.relative_to(SRC).parts[0] in ("training", "search")]
    assert not proxies, proxies


def _registered_names() -> dict[str, set[str]]:
    import semshare.data.text_segments  # noqa: F401  (each of these fills a registry)
    import semshare.features.backbones  # noqa: F401
    import semshare.importers  # noqa: F401
    import semshare.index  # noqa: F401
    import semshare.methods  # noqa: F401
    from semshare import registry

    return {name: set(value.names()) for name, value in vars(registry).items() if isinstance(value, registry.Registry)}


def test_no_command_line_choice_list_restates_a_registry():
    """CLI choices and subcommands come from what the registries hold (cli/common.py RegistryChoices, the
    import formats): a list of registered names written into cli/ would miss the next one registered."""
    registered = _registered_names()
    assert registered["INDEX_BACKENDS"] and registered["IMPORTERS"] and registered["BACKBONES"]
    restated = []
    for path in sorted((SRC / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            literals = []
            if isinstance(node, ast.keyword) and node.arg == "choices" and isinstance(node.value, (ast.List, ast.Tuple)):
                literals = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_parser" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                literals = [node.args[0].value]
            for registry, names in registered.items():  # a list of a registry's names (a name shared by chance
                if literals and set(literals) <= names:  # with another list, e.g. the synthetic preset coco, is not)
                    restated.append(f"{path.name}:{node.lineno} {sorted(literals)} ({registry})")
    assert not restated, restated


MAX_PARAMETERS = 8


def test_no_function_takes_more_than_8_parameters():
    """Past ~8 parameters a function takes a parameter object (BenchmarkPlan, ExtractRequest, TrainState, an
    import format's inputs): threading 12-18 values by hand through three calls is how they drift apart."""
    crowded = []
    for path, node in _function_definitions():
        names = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
        count = len(names) - (names[:1] in (["self"], ["cls"]))
        if count > MAX_PARAMETERS:
            crowded.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({count})")
    assert not crowded, "\n".join(crowded)
