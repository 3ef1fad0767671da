#!/usr/bin/env bash
# Checks that every Markdown file the repository refers to exists in it.
#
# Looks for `*.md` names in README.md, ARCHITECTURE.md and docs/*.md (the
# whole text), and in the comments of *.rs, *.sh, *.conf, *.yml, *.toml,
# Dockerfile and web/*.html files. Only files tracked by git are read and
# count as existing (so target/ and anything untracked are ignored).
#
# A reference resolves when:
#   - it is a bare name (`API.md`): some tracked file has that base name;
#   - it has a directory (`docs/API.md`, `../README.md`): it names a tracked
#     file relative to the referencing file's directory or to the repository
#     root. A path that leaves the repository (one that climbs above the
#     root with `../`, or an absolute one) never resolves.
# URLs (`https://...`) are not references to files in the repository.
#
# Exit status 1, with one `file:line: name` line per offender, when a
# reference does not resolve; 0 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

exec python3 - "$@" <<'PYTHON'
import os
import posixpath
import re
import subprocess
import sys

tracked = [
    path
    for path in subprocess.run(
        ["git", "ls-files", "-z"], check=True, capture_output=True
    ).stdout.decode("utf-8", "surrogateescape").split("\0")
    if path and not path.startswith(("target/", ".git/"))
]
tracked_set = set(tracked)
basenames = {posixpath.basename(path) for path in tracked}

# A reference: optional `./`, `../` or `/`, directories, a name ending in
# `.md`. Not part of a longer word, path or URL on either side.
REFERENCE = re.compile(
    r"(?<![\w./:@-])((?:\.{1,2}/|/)?(?:[\w.-]+/)*[\w.-]*\w\.md)(?![\w-])"
)


# The start of a Rust raw string: r"...", r#"..."#, br"...", ...
RAW_STRING = re.compile(r'b?r(#*)"')


def markdown(text):
    """The whole text of a Markdown file, as (line, text) pairs."""
    return [(number, line) for number, line in enumerate(text.splitlines(), 1)]


def hash_comments(text, carry_quotes):
    """Comments of `#` languages (shell, nginx, YAML, TOML, Dockerfile): a
    `#` at the start of a line or after whitespace, outside quotes. With
    `carry_quotes`, a quote left open at the end of a line goes on in the
    next one (shell)."""
    found = []
    quote = None
    for number, line in enumerate(text.splitlines(), 1):
        if not carry_quotes:
            quote = None
        index = 0
        while index < len(line):
            char = line[index]
            if quote:
                if char == "\\" and quote == '"':
                    index += 2
                    continue
                if char == quote:
                    quote = None
            elif char in "'\"" and (index == 0 or not line[index - 1].isalnum()):
                # (An apostrophe inside a word, as in `it's`, opens nothing.)
                quote = char
            elif char == "\\":
                index += 2
                continue
            elif char == "#" and (index == 0 or line[index - 1].isspace()):
                found.append((number, line[index + 1 :]))
                break
            index += 1
    return found


def c_like_comments(text, language):
    """Comments of Rust or JavaScript: `//` to the end of the line and
    `/* ... */`, outside string and character literals."""
    found = []
    index, line, length = 0, 1, len(text)

    def add(start, end, first_line):
        for offset, part in enumerate(text[start:end].split("\n")):
            found.append((first_line + offset, part))

    while index < length:
        char = text[index]
        nxt = text[index + 1] if index + 1 < length else ""
        if char == "\n":
            line += 1
            index += 1
        elif char == "/" and nxt == "/":
            end = text.find("\n", index)
            end = length if end < 0 else end
            add(index + 2, end, line)
            index = end
        elif char == "/" and nxt == "*":
            depth, end = 1, index + 2
            while end < length and depth:
                if text.startswith("/*", end) and language == "rust":
                    depth, end = depth + 1, end + 2
                elif text.startswith("*/", end):
                    depth, end = depth - 1, end + 2
                else:
                    end += 1
            add(index + 2, end, line)
            line += text.count("\n", index, end)
            index = end
        elif language == "rust" and RAW_STRING.match(text, index) \
                and not (index and (text[index - 1].isalnum() or text[index - 1] == "_")):
            start = RAW_STRING.match(text, index)
            hashes = start.group(1)
            end = text.find('"' + hashes, start.end())
            end = length if end < 0 else end + 1 + len(hashes)
            line += text.count("\n", index, end)
            index = end
        elif char == '"' or (language == "js" and char in "'`"):
            end = index + 1
            while end < length and text[end] != char:
                end += 2 if text[end] == "\\" else 1
            end = min(end + 1, length)
            line += text.count("\n", index, end)
            index = end
        elif language == "rust" and char == "'":
            # A character literal ('x', '\n', '\u{1F600}'), or a lifetime.
            literal = re.match(r"'(?:\\(?:u\{[0-9A-Fa-f]+\}|x[0-9A-Fa-f]{2}|.)|[^\\'\n])'", text[index:])
            index += len(literal.group(0)) if literal else 1
        else:
            index += 1
    return found


def html_comments(text):
    """`<!-- -->` comments, and the comments of inline scripts."""
    found = []
    for match in re.finditer(r"<!--(.*?)-->", text, re.S):
        first = text.count("\n", 0, match.start()) + 1
        for offset, part in enumerate(match.group(1).split("\n")):
            found.append((first + offset, part))
    for match in re.finditer(r"<script\b[^>]*>(.*?)</script>", text, re.S | re.I):
        first = text.count("\n", 0, match.start(1))
        found.extend(
            (first + number, part) for number, part in c_like_comments(match.group(1), "js")
        )
    return found


def what_to_read(path):
    """How to find references in `path`, or None if it is not checked."""
    name = posixpath.basename(path)
    if path in ("README.md", "ARCHITECTURE.md") or (
        path.startswith("docs/") and name.endswith(".md")
    ):
        return markdown
    if name.endswith(".rs"):
        return lambda text: c_like_comments(text, "rust")
    if name.endswith(".sh"):
        return lambda text: hash_comments(text, carry_quotes=True)
    if name.endswith((".conf", ".yml", ".toml")) or name == "Dockerfile":
        return lambda text: hash_comments(text, carry_quotes=False)
    if path.startswith("web/") and name.endswith(".html") and "/" not in path[4:]:
        return html_comments
    return None


def resolves(reference, referrer):
    if "/" not in reference:
        return reference in basenames
    if reference.startswith("/"):
        return False
    for base in (posixpath.dirname(referrer), ""):
        candidate = posixpath.normpath(posixpath.join(base, reference))
        if candidate == ".." or candidate.startswith("../"):
            continue
        if candidate in tracked_set:
            return True
    return False


offenders = []
for path in tracked:
    read = what_to_read(path)
    if read is None or not os.path.isfile(path):
        continue
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    for number, part in read(text):
        for match in REFERENCE.finditer(part):
            if not resolves(match.group(1), path):
                offenders.append(f"{path}:{number}: {match.group(1)}")

for offender in offenders:
    print(offender)
if offenders:
    print(
        f"check-docs: {len(offenders)} reference(s) to Markdown files that are not in "
        "the repository",
        file=sys.stderr,
    )
    sys.exit(1)
PYTHON
