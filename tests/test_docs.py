"""The documentation holds together: every pointer from the code or the docs to a documentation file
and section leads somewhere, every relative link in the markdown opens a file, and no line of code
is wider than 100 characters.

A pointer names a file under docs/ or the README, optionally with a section: a quoted heading after
a comma or in parentheses, or a `#anchor` compared with GitHub's heading slugs. Headings are the
`#`..`####` lines of a markdown file outside its code blocks, compared case-insensitively.
"""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINE = 100

# a quoted heading after a pointer: `, "..."` or ` ("...")`, possibly on the next (comment) line
_SECTION = r'(?:,[ \t]*(?:\n[ \t]*(?:#[ \t]*)?)?\(?|[ \t]+\(?)"([^"\n]+)"'
# a file under docs/ (from the repository root, or ../ from docs/ itself)
DOCS_REF = re.compile(r"(?<![\w./-])(?:\.\./)?(docs/[\w.-]+\.md)(?:#([\w-]+)|" + _SECTION + ")?")
# the README: by name with a quoted heading, or README.md with a #anchor
README_REF = re.compile(r"(?<![\w./-])(README)(?:\.md)?(?:(?<=\.md)#([\w-]+)|" + _SECTION + ")?")
# a markdown link or image: [text](target) or [text](target "title")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,4}[ \t]+(.+?)[ \t]*#*[ \t]*$")
FENCE = re.compile(r"^[ \t]*(```|~~~)")


def tracked(pattern: str) -> list[Path]:
    """The files git tracks that match `pattern` (every matching file if this is not a checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", pattern], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        return sorted(ROOT / p for p in out.split("\0") if p and (ROOT / p).is_file())
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for p in ROOT.rglob(pattern)
                      if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def outside_code(text: str) -> list[str]:
    """The lines of a markdown text with fenced code blocks blanked and inline code masked, so that
    a shell comment is not a heading and a bracket in code is not a link (line numbers kept)."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
        elif fenced:
            lines.append("")
        else:
            lines.append(re.sub(r"`[^`]*`", lambda m: " " * len(m.group(0)), line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to
    '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def plain(heading: str) -> str:
    return " ".join(heading.replace("`", "").split()).lower()


def sections(path: Path) -> tuple[set[str], set[str]]:
    """(headings, anchors) of a markdown file: each heading in plain lower case, and each GitHub
    slug, a repeated one also with its -1, -2, ... suffix."""
    headings, anchors, seen = set(), set(), {}
    for line in outside_code(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if m:
            text = m.group(1)
            headings.add(plain(text))
            s = slug(text)
            anchors.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return headings, anchors


def check_target(target: Path, anchor: str | None, heading: str | None) -> str | None:
    """Why a pointer to `target` (and its section) leads nowhere; None if it leads somewhere."""
    if not target.is_file():
        return "no such file"
    if anchor is None and heading is None:
        return None
    if target.suffix != ".md":
        return None
    headings, anchors = sections(target)
    if heading is not None and plain(heading) not in headings:
        return f'no heading "{heading}" in {target.relative_to(ROOT).as_posix()}'
    if anchor is not None and anchor.lower() not in anchors:
        return f"no heading with anchor #{anchor} in {target.relative_to(ROOT).as_posix()}"
    return None


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def broken_references() -> list[str]:
    problems: dict[tuple, str] = {}
    sources = tracked("*.py") + documents()
    for source in sources:
        rel = source.relative_to(ROOT).as_posix()
        text = source.read_text(encoding="utf-8")
        for regex in (DOCS_REF, README_REF):
            for m in regex.finditer(text):
                name, anchor, heading = m.groups()
                target = ROOT / ("README.md" if name == "README" else name)
                why = check_target(target, anchor, heading)
                if why:
                    line = line_of(text, m.start())
                    key = (rel, line, target, anchor, heading)
                    problems[key] = f"{rel}:{line}: {' '.join(m.group(0).split())}: {why}"
    for doc in documents():
        rel = doc.relative_to(ROOT).as_posix()
        for number, line in enumerate(outside_code(doc.read_text(encoding="utf-8")), 1):
            for m in LINK.finditer(line):
                link = m.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", link):   # http:, https:, mailto: ...
                    continue
                path, _, anchor = link.partition("#")
                target = (doc.parent / path).resolve() if path else doc
                why = check_target(target, anchor or None, None)
                if why:
                    key = (rel, number, target, anchor or None, None)
                    problems[key] = f"{rel}:{number}: link ({link}): {why}"
    return list(problems.values())


def test_every_reference_to_a_document_and_section_exists():
    broken = broken_references()
    assert not broken, f"{len(broken)} broken references:\n" + "\n".join(broken)


def test_no_line_of_python_is_over_100_characters():
    long = []
    for path in tracked("*.py"):
        lines = path.read_text(encoding="utf-8").split("\n")
        long += [f"{path.relative_to(ROOT).as_posix()}:{i} ({len(line)} characters)"
                 for i, line in enumerate(lines, 1) if len(line) > MAX_LINE]
    assert not long, f"{len(long)} lines over {MAX_LINE} characters:\n" + "\n".join(long)
