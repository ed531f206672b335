#!/usr/bin/env python3
"""Turn the marked blocks of a guide (Markdown) into one bash script.

A fenced block preceded by an HTML comment `<!-- guide: ... -->` is part of
the test; every other block is only shown. The marks:

* `<!-- guide: run -->`: run the block's commands (one shell: variables
  carry over); `run, fails`: they must fail; `run, ansible`: run only when
  ansible is at hand (the test says when it is not); `run, name=NAME`:
  keep its output as NAME.out and NAME.err for the test's own checks.
* `<!-- guide: file PATH -->`: write the block's text to PATH.
* `<!-- guide: expect stdout -->` (or `stderr`): the output of the run
  block before it is this text, once hex digests of 32 digits or more and
  systemd's version are masked on both sides.

The script calls the runner's functions guide_run, guide_file and
guide_expect (tests/guide/run defines them); each is given the line of the
block in the guide, so a failure names it.
"""

import re
import sys

MARK = re.compile(r"^<!--\s*guide:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(```+|~~~+)")


def blocks(lines):
    """Yield (mark, line number of the block, text) for each marked block."""
    mark = None
    i = 0
    while i < len(lines):
        line = lines[i]
        found = MARK.match(line)
        if found:
            mark = found.group(1)
            i += 1
            continue
        fence = FENCE.match(line)
        if fence:
            end = i + 1
            while end < len(lines) and not lines[end].startswith(fence.group(1)):
                end += 1
            if end == len(lines):
                sys.exit(f"line {i + 1}: a code block that does not end")
            if mark is not None:
                yield mark, i + 1, "".join(lines[i + 1:end])
            mark = None
            i = end + 1
            continue
        if line.strip():
            mark = None  # a mark applies to the block right after it
        i += 1


def heredoc(text, tag):
    if f"\n{tag}\n" in f"\n{text}":
        sys.exit(f"the text holds the heredoc tag {tag}")
    return f"<<'{tag}'\n{text}{tag}\n"


def script(path):
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    out = []
    for mark, line, text in blocks(lines):
        kind, _, args = mark.partition(" ")
        kind = kind.rstrip(",")
        if kind == "run":
            flags = [a.strip() for a in mark.split(",")[1:]]
            unknown = [f for f in flags if f not in ("fails", "ansible") and not f.startswith("name=")]
            if unknown:
                sys.exit(f"line {line}: unknown flags {unknown}")
            # The block runs in this shell (errexit on: its first failing
            # command ends the test, which names the block), its output
            # kept for expect. One that must fail runs with errexit off
            # (in a list), its status given to guide_ran.
            run = f"guide_run {line} '{' '.join(flags)}' && "
            body = f"{{\n{text}}} >\"$guide_out\" 2>\"$guide_err\""
            if "fails" in flags:
                out.append(f"{run}{{ {body} && guide_ran 0 || guide_ran $?; }}\n")
            else:
                out.append(f"{run}{{ {body}; guide_ran $?; }}\n")
        elif kind == "file":
            target = args.strip()
            if not target:
                sys.exit(f"line {line}: file needs a path")
            out.append(f"guide_file {line} {target} {heredoc(text, '__GUIDE_FILE__')}")
        elif kind == "expect":
            stream = args.strip()
            if stream not in ("stdout", "stderr"):
                sys.exit(f"line {line}: expect stdout or expect stderr")
            out.append(f"guide_expect {line} {stream} {heredoc(text, '__GUIDE_EXPECT__')}")
        else:
            sys.exit(f"line {line}: unknown mark {mark!r}")
    return "".join(out)


if __name__ == "__main__":
    sys.stdout.write(script(sys.argv[1]))
