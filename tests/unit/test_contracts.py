"""The platform's shared names are written once, in healthrisk.contracts, and imported elsewhere.

A copy of a metric name, tag key, label key, port or environment variable name is a typo
waiting to happen that no other test notices (a metric nobody reads, a label nothing
selects). This scans the string and number constants of every Python file in code for
them. Docstrings are prose and not scanned.

Contract values that are plain lowercase words (`round`, `count`, `promoted`, `champion`,
`superlink`, `drift`, ...) are not scanned: the same words name CRD status fields, CLI
subcommands and Flower records, and a scan by value cannot tell those apart. Hyphenated
words (`health-risk`, `rolled-back`) count only as a whole literal, since prose and
derived names (`health-risk-mlflow`, "the health-risk model") contain them too; keys
(`val_auc`, `healthrisk.sites`, `app.kubernetes.io/name`, `MODEL_VERSION`) and ports
count wherever they stand alone inside a literal.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import healthrisk.contracts as contracts

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("src", "services", "operator", "benchmarks", "tests")
EXEMPT = {Path(contracts.__file__).resolve(), Path(__file__).resolve()}
PORT_NAME = re.compile(r"port", re.IGNORECASE)


def contract_strings(words: bool) -> dict[str, str]:
    """Value → constant name(s) of the contracts module's scanned strings: the hyphenated
    words (`words`) or the keys."""
    values: dict[str, list[str]] = {}
    for name, value in vars(contracts).items():
        if not (name.isupper() and isinstance(value, str)) or re.fullmatch(r"[a-z]+", value):
            continue
        if bool(re.fullmatch(r"[a-z]+(-[a-z]+)+", value)) == words:
            values.setdefault(value, []).append(name)
    return {value: " or ".join(names) for value, names in values.items()}


def contract_ports() -> dict[int, str]:
    return {v: n for n, v in vars(contracts).items() if n.endswith("_PORT") and isinstance(v, int)}


WORDS = contract_strings(words=True)
KEYS = contract_strings(words=False)
PORTS = contract_ports()
# A key inside a longer literal counts when it stands alone there: `app.kubernetes.io/name=x`
# and `tags.\`healthrisk.sites\`` hold a copy; `MODEL_VERSION_GRACE_S` and `healthrisk.io.yaml` do not.
KEY_PATTERN = re.compile(
    r"(?<![\w\-/.])(" + "|".join(re.escape(v) for v in sorted(KEYS, key=len, reverse=True)) + r")(?![\w\-/])"
)
PORT_PATTERN = re.compile(r"(?:^|:)(" + "|".join(str(p) for p in PORTS) + r")(?!\d)")


@dataclass(frozen=True)
class Copy:
    path: Path
    line: int
    literal: str
    name: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: {self.literal!r} — import contracts.{self.name}"


def docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def port_positions(tree: ast.AST) -> set[int]:
    """Integer constants that stand for a port: arguments of `*port*` functions, `*port*`
    keywords, keys, names and parameters."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if PORT_NAME.search(ast.unparse(node.func)):
                ids.update(id(a) for a in node.args)
            ids.update(id(k.value) for k in node.keywords if k.arg and PORT_NAME.search(k.arg))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and PORT_NAME.search(str(key.value)):
                    ids.add(id(value))
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(PORT_NAME.search(ast.unparse(t)) for t in targets) and node.value is not None:
                ids.add(id(node.value))
        elif isinstance(node, ast.arguments):
            positional = node.posonlyargs + node.args
            pairs = list(zip(positional[len(positional) - len(node.defaults) :], node.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True) if d is not None]
            ids.update(id(d) for a, d in pairs if PORT_NAME.search(a.arg))
    return ids


def copies_in(path: Path) -> Iterator[Copy]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = docstrings(tree)
    ports = port_positions(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or id(node) in skip:
            continue
        if isinstance(node.value, str):
            if node.value in WORDS:
                yield Copy(path, node.lineno, node.value, WORDS[node.value])
            for match in KEY_PATTERN.finditer(node.value):
                yield Copy(path, node.lineno, node.value, KEYS[match.group(1)])
            for match in PORT_PATTERN.finditer(node.value):
                yield Copy(path, node.lineno, node.value, PORTS[int(match.group(1))])
        elif type(node.value) is int and node.value in PORTS and id(node) in ports:
            yield Copy(path, node.lineno, str(node.value), PORTS[node.value])


def python_files() -> Iterator[Path]:
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            if path.resolve() not in EXEMPT and ".venv" not in path.parts:
                yield path


def test_no_contract_name_is_written_out_in_code() -> None:
    found = [str(c) for path in python_files() for c in copies_in(path)]
    assert not found, "contract names copied as literals:\n" + "\n".join(found)


def test_the_scan_finds_each_kind_of_copy(tmp_path: Path) -> None:
    """The scan itself: one copy of each kind is found, lookalikes are not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Docstrings may name healthrisk.sites and MLFLOW_TRACKING_URI."""\n'
        'metrics = {"val_auc": 0.9, "steps": 8000}\n'
        'selector = "healthrisk.io/role=superlink"\n'
        "filter_string = \"tags.`healthrisk.sites` = 'a'\"\n"
        'env = {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}\n'
        "port_forward('svc/api', 8080)\n"
        'ports = [{"containerPort": 8000}]\n'
        'service = "health-risk-mlflow"\n'
        'model = "health-risk"\n'
        'title = "the health-risk model"\n'
        'grace = "HEALTHRISK_OPERATOR_MODEL_VERSION_GRACE_S"\n'
        "status = {'round': 3}\n"
        "sample(max_rows=5000)\n"
    )
    found = {(c.line, c.name) for c in copies_in(sample)}
    assert found == {
        (2, "METRIC_VAL_AUC"),
        (3, "LABEL_ROLE"),
        (4, "TAG_SITES"),
        (5, "ENV_TRACKING_URI"),
        (5, "MLFLOW_PORT"),
        (6, "INFERENCE_PORT"),
        (7, "SUPERLINK_PORT"),
        (9, "REGISTERED_MODEL or APP_NAME"),
    }
