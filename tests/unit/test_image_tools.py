"""image/tools.py's compile_app: which compiler builds and links what, and how its
failures read (no kernel involved; a real gcc, and a fake g++ where one must fail)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from umonitor.errors import EnvironmentProblem, UsageError
from umonitor.image import tools


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_user_flags_reach_the_users_sources_only(tmp_path: Path) -> None:
    app = write(
        tmp_path / "app.c",
        '#ifndef USER_FLAG\n#error "flags missed the app"\n#endif\n'
        "int helper(void);\nint main(void) { return helper(); }\n",
    )
    lib = write(
        tmp_path / "lib.c",
        '#ifdef USER_FLAG\n#error "flags reached the library"\n#endif\n'
        "int helper(void) { return 0; }\n",
    )
    out = tmp_path / "app"
    tools.compile_app([app], [lib], out, tmp_path, ["-static", "-O2"], ["-DUSER_FLAG"])
    assert subprocess.run([str(out)], check=False).returncode == 0
    with pytest.raises(UsageError, match="flags reached the library"):
        tools.compile_app([lib], [], out, tmp_path, ["-O2"], ["-DUSER_FLAG"])


def test_link_flags_come_after_the_objects(tmp_path: Path) -> None:
    """A static link resolves a library's symbols only for objects before it: -lm as
    a user flag (before the objects) leaves cos undefined, as a link flag it links."""
    app = write(
        tmp_path / "app.c",
        "#include <math.h>\n#include <stdlib.h>\n"
        "int main(int argc, char **argv) {\n"
        "    (void)argv; return cos((double)argc - 1.0) == 1.0 ? 0 : 1;\n}\n",
    )
    out = tmp_path / "app"
    with pytest.raises(UsageError, match="cos"):
        tools.compile_app([app], [], out, tmp_path, ["-static", "-O0"], ["-lm"])
    tools.compile_app([app], [], out, tmp_path, ["-static", "-O0"], [], ["-lm"])
    assert subprocess.run([str(out)], check=False).returncode == 0


def test_a_compile_error_is_one_usage_error_naming_the_file(tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.cpp", "int main() { return undefined_name; }\n")
    with pytest.raises(
        UsageError, match=r"^compiling .*broken\.cpp failed:\n(.|\n)*undefined_name"
    ):
        tools.compile_app([broken], [], tmp_path / "app", tmp_path, ["-O2"])


def test_a_link_error_is_a_usage_error(tmp_path: Path) -> None:
    app = write(tmp_path / "app.c", "int missing(void);\nint main(void) { return missing(); }\n")
    with pytest.raises(UsageError, match=r"^linking .*app\.c failed:\n(.|\n)*missing"):
        tools.compile_app([app], [], tmp_path / "app", tmp_path, ["-O2"])


def test_no_gxx_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr(tools.shutil, "which", lambda n: None if n == "g++" else real(n))
    app = write(tmp_path / "app.cc", "int main() {}\n")
    with pytest.raises(
        EnvironmentProblem, match=r"g\+\+ is not installed \(Debian: apt-get install g\+\+\)"
    ):
        tools.compile_app([app], [], tmp_path / "app", tmp_path, ["-O2"])


def test_no_static_libstdcxx_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """g++ answers -print-file-name with the bare name when it has no such file."""
    fake = write(
        tmp_path / "g++",
        '#!/bin/sh\ncase "$1" in\n-print-file-name=*) echo "${1#*=}";;\n'
        "-dumpversion) echo 12;;\n*) exit 1;;\nesac\n",
    )
    fake.chmod(0o755)
    real = shutil.which
    monkeypatch.setattr(tools.shutil, "which", lambda n: str(fake) if n == "g++" else real(n))
    app = write(tmp_path / "app.cxx", "int main() {}\n")
    with pytest.raises(
        EnvironmentProblem, match=r"libstdc\+\+\.a.*apt-get install libstdc\+\+-12-dev"
    ):
        tools.compile_app([app], [], tmp_path / "app", tmp_path, ["-O2"])


@pytest.mark.parametrize("name", ["a.cc", "a.cpp", "a.cxx", "A.CPP"])
def test_cxx_suffixes(name: str) -> None:
    assert tools.is_cxx(Path(name))
    assert not tools.is_cxx(Path("a.c")) and not tools.is_cxx(Path("a.h"))
