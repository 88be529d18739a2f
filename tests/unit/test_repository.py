"""Checks on the repository itself: generated docs are current, layout conventions hold."""

import re
import subprocess
import sys

import yaml

from services import REPO


def test_role_readmes_match_their_argument_specs():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "role-docs"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_role_has_argument_specs_and_readme():
    for role in (REPO / "roles").iterdir():
        spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
        assert "main" in spec["argument_specs"], role.name
        assert (role / "README.md").exists(), role.name


def test_role_variables_carry_the_role_prefix():
    for role in (REPO / "roles").iterdir():
        defaults = role / "defaults" / "main.yml"
        if defaults.exists():
            for name in yaml.safe_load(defaults.read_text()) or {}:
                assert name.startswith(role.name + "_"), f"{role.name}: {name}"


def test_every_function_has_its_files():
    for fn in (REPO / "functions").iterdir():
        if fn.is_dir() and fn.name != "lib":   # lib/: the modules functions share, not a function
            assert (fn / "__main__.py").exists() or (fn / "exec").exists(), fn.name
            for f in ("function.yml", "README.md", "Dockerfile"):
                assert (fn / f).exists(), f"{fn.name}/{f}"


def test_missing_python_fails_with_one_clear_line(tmp_path):
    out = subprocess.run(["make", "-s", "venv", f"VENV={tmp_path}/venv", "PYTHON=python3.11-does-not-exist"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0
    lines = [x for x in out.stdout.splitlines() + out.stderr.splitlines() if x.startswith("panfaas:")]
    assert len(lines) == 1 and "python3.11-does-not-exist not found" in lines[0], out


def test_every_runbook_is_in_the_runbook_index():
    index = (REPO / "docs" / "runbooks" / "README.md").read_text()
    for page in (REPO / "docs" / "runbooks").glob("*.md"):
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/runbooks/README.md does not list {page.name}"


def test_relative_links_in_the_docs_resolve():
    tracked = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True).stdout.split()
    pages = {REPO / p for p in tracked} | set((REPO / "docs").rglob("*.md"))
    broken = []
    for page in sorted(pages):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not target.startswith("mailto:") and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)
