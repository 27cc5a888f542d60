"""Programs that run inside containers, kept as real modules (linted, unit-tested) and shipped as source.

`bundle(name)` turns `dmp_deploy/container/<name>.py`, with the dmp_deploy modules it imports (`from dmp_deploy
import X`), into one `python -c` script for a task definition's command: the image needs nothing of this tool
installed. A shared module is the very file the CLI uses (for add_users_program, users_file.py: the same checks
on both sides), so it must be standard library only: `bundle` refuses one that imports anything else of this
tool, or anything outside the standard library but the image's own packages the program names in
`IMAGE_PACKAGES`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # dmp_deploy/
IMAGE_PACKAGES = frozenset({"dmapiclient"})  # what the api image has installed (add_users_program imports it)

_LOADER = '''\
# dmp-deploy: {program} with {shared}, shipped as source ({where}). Do not edit here: edit those files.
import sys, types
def load(name, source):
    module = types.ModuleType(name)
    module.__file__ = name.replace(".", "/") + ".py"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module
package = types.ModuleType("dmp_deploy")
package.__path__ = []
sys.modules["dmp_deploy"] = package
'''


class BundleError(ValueError):
    """A container program or a module it shares cannot be shipped as source."""


def _imports(source: str, filename: str) -> tuple[list[str], list[str]]:
    """(dmp_deploy modules imported with `from dmp_deploy import X`, other top-level modules imported)."""
    shared, others = [], []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom) and node.module == "dmp_deploy" and node.level == 0:
            shared += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level or (node.module or "").split(".")[0] == "dmp_deploy":
                raise BundleError(f"{filename}: only `from dmp_deploy import MODULE` can be shipped with a "
                                  f"container program")
            if node.module != "__future__":
                others.append(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            others += [alias.name.split(".")[0] for alias in node.names]
    return shared, others


def _check_outside_imports(modules: list[str], filename: str) -> None:
    for module in modules:
        if module == "dmp_deploy":
            raise BundleError(f"{filename}: `import dmp_deploy...` cannot be shipped; use `from dmp_deploy import X`")
        if module not in sys.stdlib_module_names and module not in IMAGE_PACKAGES:
            raise BundleError(f"{filename}: imports {module!r}, which is neither standard library nor installed "
                              f"in the image ({', '.join(sorted(IMAGE_PACKAGES))})")


def sources(name: str) -> tuple[str, dict[str, str]]:
    """The program's source and {module: source} of the dmp_deploy modules it shares, checked."""
    program_file = PACKAGE_DIR / "container" / f"{name}.py"
    if not program_file.is_file():
        raise BundleError(f"no container program {name!r}: expected {program_file}")
    program = program_file.read_text()
    shared_names, others = _imports(program, str(program_file))
    _check_outside_imports(others, str(program_file))
    shared = {}
    for module in shared_names:
        module_file = PACKAGE_DIR / f"{module}.py"
        source = module_file.read_text()
        nested, module_others = _imports(source, str(module_file))
        if nested:
            raise BundleError(f"{module_file}: a module shared with a container program may not import other "
                              f"dmp_deploy modules ({', '.join(nested)})")
        _check_outside_imports(module_others, str(module_file))
        if any(m in IMAGE_PACKAGES for m in module_others):
            raise BundleError(f"{module_file}: a shared module must be standard library only (the CLI imports it)")
        shared[module] = source
    return program, shared


def bundle(name: str) -> str:
    """One `python -c` script: loads the shared modules as `dmp_deploy.X`, then runs the program's main()."""
    program, shared = sources(name)
    parts = [_LOADER.format(program=f"dmp_deploy/container/{name}.py",
                            shared=", ".join(f"dmp_deploy/{m}.py" for m in shared) or "nothing shared",
                            where="dmp_deploy/container/__init__.py: bundle")]
    for module, source in shared.items():
        parts.append(f"package.{module} = load({'dmp_deploy.' + module!r}, {source!r})\n")
    parts.append(f"sys.exit(load({'dmp_deploy.container.' + name!r}, {program!r}).main())\n")
    return "".join(parts)
