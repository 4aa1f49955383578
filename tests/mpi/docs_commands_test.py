#!/usr/bin/env python3
"""Runs the commands of README.md and docs/*.md as a new user would, in a scratch copy.

Usage: docs_commands_test.py SOURCE_DIR TANDEM_BINARY [--page FILE]... [--keep]

Pages run in reading order (README.md, docs/getting-started.md, then the other pages by name) in
one scratch directory holding copies of configs/, docs/, launch/ and scripts/, links to data/
and .venv/, and build/bin/tandem, so that later pages find what earlier ones made
(runs/tiny_moe/, ...). Commands are every line of a ```bash block and every `$ ` line of any
block; the lines after a `$ ` command up to the next one are its quoted output, which must
appear in what the command prints, in order (after dropping log prefixes, times and host names;
a quoted line may be a part of the printed one, and "..." lines stand for anything).
An HTML comment right before a block adjusts it, directives separated by ';':
  <!-- docs-test: skip why -->      not run, reported as SKIPPED with the reason (GPU, cluster)
  <!-- docs-test: set K=V ... -->   `--set K=V` appended to its `tandem train` commands (short runs)
  <!-- docs-test: sub OLD=>NEW ... --> text replaced in its commands (the step of a shortened run)
  <!-- docs-test: output varies --> the quoted output is an example (timings): not compared
  <!-- docs-test: exit N -->        its commands exit N (a documented error)
  <!-- docs-test: needs PATH -->    skipped (visibly) when PATH does not exist in the scratch copy
Exit 0 when every command ran as documented, 1 otherwise.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

COMMAND_TIMEOUT_S = 300


class Block:
    def __init__(self, page, line, lang, body, directives):
        self.page, self.line, self.lang, self.body, self.directives = page, line, lang, body, directives

    def where(self):
        return f"{self.page}:{self.line}"


def parse_directives(comment):
    directives = {}
    for part in comment.split(";"):
        part = part.strip()
        if part:
            word, _, rest = part.partition(" ")
            directives[word] = rest.strip()
    return directives


def blocks_of(page, text):
    lines = text.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        directives = {}
        marker = re.match(r"^<!-- docs-test: (.*) -->$", lines[i - 1]) if i > 0 else None
        if marker:
            directives = parse_directives(marker.group(1))
        body = lines[i + 1:end]
        if fence.group(1) in ("bash", "sh") or any(line.startswith("$ ") for line in body):
            blocks.append(Block(page, i + 1, fence.group(1), body, directives))
        i = end + 1
    return blocks


def commands_of(block):
    """[(command, quoted output lines)]: continuation lines (ending in a backslash) joined."""
    commands = []
    transcript = any(line.startswith("$ ") for line in block.body)
    lines = iter(block.body)
    for line in lines:
        if transcript:
            if not line.startswith("$ "):
                if commands:
                    commands[-1][1].append(line)
                continue
            line = line[2:]
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines, "").strip()
        commands.append((line, []))
    return commands


# A log line's prefix: time, rank tag, level, module (the docs often quote only the message).
LOG_PREFIX = re.compile(r"^(\[\d\d:\d\d:\d\d\.\d+\] )?(\[r\d+/\d+\] )?(\[(trace|debug|info|warning|error|critical)\] )?"
                        r"(\[[\w-]+\] )?")


def normalise(line):
    line = LOG_PREFIX.sub("", line)
    line = re.sub(r"\[rank (\d+) on [^\]]+\]", r"[rank \1 on HOST]", line)
    return line.rstrip()


def missing_quoted_line(quoted, printed):
    """The first quoted line not found (in order) in the printed output, or None."""
    actual = [normalise(line) for line in printed.split("\n")]
    at = 0
    for line in quoted:
        want = normalise(line)
        if not want.strip() or want.strip() in ("...", "(...)"):
            continue
        while at < len(actual) and want not in actual[at]:
            at += 1
        if at == len(actual):
            return line
        at += 1
    return None


def with_overrides(command, sets):
    if not sets or not re.search(r"\btandem train\b", command):
        return command
    extra = " ".join(f"--set {item}" for item in sets.split())
    comment = command.find(" #")
    return f"{command[:comment]} {extra}{command[comment:]}" if comment >= 0 else f"{command} {extra}"


def make_scratch(source, tandem, scratch):
    for name in ("configs", "docs", "launch", "scripts"):
        shutil.copytree(os.path.join(source, name), os.path.join(scratch, name), symlinks=True)
    shutil.copy(os.path.join(source, "README.md"), scratch)
    for name in ("data", ".venv"):
        if os.path.exists(os.path.join(source, name)):
            os.symlink(os.path.join(source, name), os.path.join(scratch, name))
    os.makedirs(os.path.join(scratch, "build", "bin"))
    os.symlink(os.path.abspath(tandem), os.path.join(scratch, "build", "bin", "tandem"))


def run_block(block, scratch):
    """Returns (verdict, text): verdict is ok, SKIPPED or FAIL."""
    d = block.directives
    if "skip" in d:
        return "SKIPPED", d["skip"] or "marked skip"
    if "needs" in d and not os.path.exists(os.path.join(scratch, d["needs"])):
        return "SKIPPED", f"needs {d['needs']}, which this machine lacks"
    want_exit = int(d.get("exit", "0"))
    commands = commands_of(block)
    for command, quoted in commands:
        command = with_overrides(command, d.get("set", ""))
        for pair in d.get("sub", "").split():
            old, _, new = pair.partition("=>")
            command = command.replace(old, new)
        start = time.time()
        try:
            done = subprocess.run(["bash", "-c", command], cwd=scratch, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return "FAIL", f"`{command}` ran over {COMMAND_TIMEOUT_S} s"
        printed = done.stdout + done.stderr
        tail = "\n".join("    " + line for line in printed.strip().split("\n")[-6:])
        if done.returncode != want_exit:
            return "FAIL", f"`{command}` exited {done.returncode} (documented: {want_exit})\n{tail}"
        if "output" not in d:
            missing = missing_quoted_line(quoted, printed)
            if missing is not None:
                return "FAIL", f"`{command}`: the documented line\n    {missing.strip()}\nis not in its output:\n{tail}"
        print(f"    {time.time() - start:5.1f} s  {command}", flush=True)
    return "ok", f"{len(commands)} command(s)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source")
    parser.add_argument("tandem")
    parser.add_argument("--page", action="append", default=[], help="only these pages (relative paths)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.source, "data", "tiny_corpus.bin")):
        print("SKIPPED: data/tiny_corpus.bin is missing (scripts/prepare_data.sh builds it)")
        return 77
    pages = ["README.md", "docs/getting-started.md"]
    pages += sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(args.source, "docs"))
                    if name.endswith(".md") and os.path.join("docs", name) not in pages)
    if args.page:
        pages = [page for page in pages if page in args.page]
    scratch = tempfile.mkdtemp(prefix="tandem-docs-")
    counts = {"ok": 0, "SKIPPED": 0, "FAIL": 0}
    try:
        make_scratch(args.source, args.tandem, scratch)
        for page in pages:
            with open(os.path.join(args.source, page)) as f:
                for block in blocks_of(page, f.read()):
                    verdict, text = run_block(block, scratch)
                    counts[verdict] += 1
                    print(f"{verdict}: {block.where()}: {text}", flush=True)
    finally:
        if args.keep:
            print(f"scratch copy kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{counts['ok']} blocks ran as documented, {counts['SKIPPED']} skipped, {counts['FAIL']} failed")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
