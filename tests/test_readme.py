"""README.md tells the truth about the tree: its code map lists every module, and only those."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _code_map() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## How the code is organised"):]
    return section[section.index("```") + 3:].split("```", 1)[0]


def _listed() -> set[str]:
    """Paths named in the map: an entry's indentation (two spaces a level) places it under
    the folder above it; continuation lines (indented past the names) name nothing."""
    paths, folders = set(), []
    for line in _code_map().splitlines():
        match = re.match(r"^( *)(\S+)", line)
        if not match or not re.fullmatch(r"[\w.]+/?", match.group(2)):
            continue
        depth = len(match.group(1)) // 2
        if len(match.group(1)) % 2 or depth > len(folders):
            continue        # a description's continuation
        folders = folders[:depth]
        name = match.group(2)
        path = "/".join([*folders, name.rstrip("/")])
        paths.add(path)
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
    return paths


def test_every_module_is_in_the_map_and_every_entry_exists():
    listed = _listed()
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "tabembed").rglob("*.py")}
    folders = {str(p.relative_to(ROOT)) for p in (ROOT / "tabembed").rglob("*")
               if p.is_dir() and p.name != "__pycache__"}
    assert sorted(modules - listed) == [], "modules missing from README's code map"
    for path in listed:
        assert (ROOT / path).exists(), f"README's code map names {path}, which does not exist"
    assert folders <= listed, "package folders missing from README's code map"


def test_the_map_parser_sees_nesting():
    listed = _listed()
    assert {"tabembed/estimators/base.py", "tabembed/recommenders/base.py",
            "tabembed/training/run.py", "tests", "bench"} <= listed
