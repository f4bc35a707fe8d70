"""README.md and docs/ against the code: the generated CLI reference, the commands they show, their links."""

import importlib.metadata
import importlib.util
import re
from pathlib import Path

import pytest
import typer

from attn_deploy.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CLI_DOCS = ROOT / "scripts" / "cli_docs.py"


def cli_docs_module():
    spec = importlib.util.spec_from_file_location("cli_docs", CLI_DOCS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def options_by_command() -> dict[str, set[str]]:
    """Every command's name and the option names it accepts (``--help`` included)."""
    group = typer.main.get_command(app)
    return {name: {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
            for name, command in group.commands.items()}


def code_of(text: str) -> list[str]:
    """The lines of fenced code blocks and the inline code spans outside them."""
    lines = [line for block in FENCE.findall(text) for line in block.splitlines()]
    return lines + SPAN.findall(FENCE.sub("", text))


def invocations(text: str, commands: set[str]) -> list[tuple[str, list[str]]]:
    """``(command, flags)`` of every ``attn-deploy CMD ...`` in the code, and every span that starts ``CMD --``."""
    found = []
    for code in code_of(text):
        code = code.split(" #")[0].removeprefix("$ ")
        words = code.split()
        if "attn-deploy" in words and words.index("attn-deploy") + 1 < len(words):
            rest = words[words.index("attn-deploy") + 1:]
        elif len(words) > 1 and words[0] in commands and words[1].startswith("--"):
            rest = words
        else:
            continue
        rest = rest[:next((i for i, w in enumerate(rest) if w in ("&&", "||", "|", ";")), len(rest))]
        if rest[0] in ("[OPTIONS]", "COMMAND"):
            continue
        found.append((rest[0], [re.split(r"[=\[\]]", w)[0] for w in rest[1:] if w.startswith("-")]))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_cli_reference_is_generated_from_the_app():
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == cli_docs_module().render(), "docs/cli.md is stale: run python scripts/cli_docs.py"


def test_cli_reference_names_every_command_and_option():
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, options in options_by_command().items():
        assert f"## `attn-deploy {name}`" in committed
        assert all(f"`{opt}" in committed or f" {opt}" in committed for opt in options if opt.startswith("--"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_shown_exist_with_their_flags(page):
    options = options_by_command()
    shown = invocations(page.read_text(encoding="utf-8"), set(options))
    assert page.name != "README.md" or {cmd for cmd, _ in shown} >= set(options), "the README shows every command"
    for command, flags in shown:
        assert command in options, f"{page.name}: attn-deploy {command} is not a command"
        unknown = [f for f in flags if f not in options[command]]
        assert not unknown, f"{page.name}: attn-deploy {command} has no {unknown}"


def test_invocations_are_found_and_judged():
    commands = {"export", "bench"}
    text = "Run `attn-deploy export best.pt --target onnx --tol fp16=0.02` then\n```bash\n" \
           "attn-deploy bench x.onnx --zoo  # --nothing\n```\nand `export --nope 1`; `data` alone."
    assert invocations(text, commands) == [("bench", ["--zoo"]), ("export", ["--target", "--tol"]),
                                           ("export", ["--nope"])]


def fenced_commands(text: str) -> list[str]:
    return [line.strip() for block in FENCE.findall(text) for line in block.splitlines()
            if line.startswith("python3 -m venv")]


def test_readme_commands_are_what_ci_runs_and_what_installs_the_demo():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci_line = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    demo, tests = fenced_commands(readme)
    assert tests == ci_line
    venv = ci_line.split(" && pip install")[0]
    assert demo == f"{venv} && pip install . && attn-deploy demo"
    assert "demo" in options_by_command()
    scripts = importlib.metadata.entry_points(group="console_scripts", name="attn-deploy")
    assert [script.value for script in scripts] == ["attn_deploy.cli:main"]
    assert "test" in importlib.metadata.metadata("attn-deploy").get_all("Provides-Extra")


def links(page: Path) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8")))
            if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_reach_a_file_and_heading(page):
    for target in links(page):
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name}: {target} points to a missing file"
        if anchor:
            assert path.suffix == ".md" and anchor in anchors(path), f"{page.name}: {target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_repository_paths_named_exist(page):
    """``attn_deploy/...``, ``scripts/...``, ``tests/...`` and ``reports/...`` in code, placeholders (STEM) aside."""
    named = {word for code in code_of(page.read_text(encoding="utf-8")) for word in code.split()
             if re.fullmatch(r"(attn_deploy|scripts|tests|reports)/[a-z0-9_./-]*", word)}
    missing = sorted(word for word in named if not (ROOT / word).exists())
    assert not missing, f"{page.name} names missing paths {missing}"


def test_slugs_follow_github():
    assert slug("Tune: the fastest artefact that passes") == "tune-the-fastest-artefact-that-passes"
    assert slug("Accuracy (mAP) parity") == "accuracy-map-parity"
    assert slug("`attn-deploy export`") == "attn-deploy-export"


def test_docs_name_every_export_target():
    from attn_deploy import pipeline

    targets = (ROOT / "docs" / "targets.md").read_text(encoding="utf-8")
    for target in pipeline.TARGETS:
        assert f"\n## {target}\n" in targets
