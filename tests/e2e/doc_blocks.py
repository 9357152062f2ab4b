#!/usr/bin/env python3
"""Writes a bash script that runs a Markdown file's ```sh blocks in order, as a
reader would type them (blocks fenced ```sh nocheck are shown, not run), for
tests/e2e/test_docs.sh. The script stops at the first failing command and says
which block it was in. Test-only changes, so that the docs read as a person
would type them: ports the docs name (7000-9999) become free ones, and after a
command put in the background it waits (up to 15 s) until every port that command
names accepts connections on 127.0.0.1 (a second, if it names none).

usage: doc_blocks.py FILE.md PORT... > script.sh   (as many free ports as the file needs, in order)
"""
import re
import sys

path, ports = sys.argv[1], sys.argv[2:]
lines = open(path).read().split("\n")
blocks, i = [], 0
while i < len(lines):
    m = re.match(r"^```(\S*)(.*)$", lines[i])
    if m:
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        if m.group(1) == "sh" and "nocheck" not in m.group(2):
            blocks.append((i + 1, lines[i + 1:j]))
        i = j
    i += 1

port_re = re.compile(r"((?:127\.0\.0\.1|localhost|\*)[:/])([7-9]\d{3})\b")
mapping = {}
cmd_ports = []  # the ports the current command names so far (over its \ continuation lines)


def new_port(m):
    p = m.group(2)
    if p not in mapping:
        if len(mapping) >= len(ports):
            sys.exit("%s: more ports than given" % path)
        mapping[p] = ports[len(mapping)]
    if mapping[p] not in cmd_ports:
        cmd_ports.append(mapping[p])
    return m.group(1) + mapping[p]


out = ["set -eo pipefail", "BG=()",
       "trap 'echo \"FAILED in block at %s:$BLOCK\" >&2' ERR" % path,
       # servers the docs start in the background end with the script
       "trap 'for p in \"${BG[@]}\"; do kill $p 2>/dev/null; done; wait 2>/dev/null' EXIT",
       # a server put in the background, and the servers it talks to, listen before the next
       # command (a fixed second was not always enough on a loaded machine); at worst, go on
       "wait_ports() {",
       "  local p i",
       "  for p in \"$@\"; do",
       "    i=0",
       "    until (exec 3<>\"/dev/tcp/127.0.0.1/$p\") 2>/dev/null; do",
       "      i=$((i + 1))",
       "      [ $i -lt 150 ] || { echo \"port $p: nobody listens after 15 s\" >&2; break; }",
       "      sleep 0.1",
       "    done",
       "  done",
       "}"]
for start, body in blocks:
    out.append("BLOCK=%d" % start)
    out.append("echo '--- %s:%d' >&2" % (path, start))
    for line in body:
        line = port_re.sub(new_port, line)
        out.append(line)
        if line.rstrip().endswith("&") and not line.rstrip().endswith("&&"):
            out.append("BG+=($!)")
            out.append("wait_ports %s" % " ".join(cmd_ports) if cmd_ports else "sleep 1")
        if not line.rstrip().endswith("\\"):
            cmd_ports = []
print("\n".join(out))
