#!/usr/bin/env python3
"""Report functions longer than a limit (default 150 lines) in the given Rust source trees.

Usage: scripts/fn-length.py [--max N] DIR...   (exit status 1 if any function is longer)

A function runs from its `fn` line to the line holding the brace that closes its body; braces
inside strings, chars and comments are ignored. Test modules count like any other code.
"""
import os, re, sys

FN = re.compile(r'^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+|async\s+|unsafe\s+|extern\s+"[^"]*"\s+)*fn\s+(\w+)')


def strip(line, state):
    """Return `line` with strings, chars and comments blanked; `state` carries block comments
    and strings across lines."""
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if state['block']:
            if line.startswith('*/', i):
                state['block'] -= 1
                i += 2
                continue
            if line.startswith('/*', i):
                state['block'] += 1
                i += 2
                continue
            i += 1
            continue
        if state['str']:
            if c == '\\':
                i += 2
                continue
            if c == '"':
                state['str'] = False
            i += 1
            continue
        if line.startswith('//', i):
            break
        if line.startswith('/*', i):
            state['block'] += 1
            i += 2
            continue
        if c == '"':
            state['str'] = True
            i += 1
            continue
        if c == "'":
            m = re.match(r"'(\\.|[^\\'])'", line[i:])
            if m:
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return ''.join(out)


def functions(path):
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    state = {'block': 0, 'str': False}
    code = [strip(l, state) for l in lines]
    i = 0
    while i < len(code):
        m = FN.match(code[i])
        if not m:
            i += 1
            continue
        depth, opened, j = 0, False, i
        while j < len(code):
            for ch in code[j]:
                if ch == '{':
                    depth += 1
                    opened = True
                elif ch == '}':
                    depth -= 1
                elif ch == ';' and not opened and depth == 0:
                    break
            else:
                if opened and depth == 0:
                    break
                j += 1
                continue
            break
        if opened:
            yield m.group(1), i + 1, j - i + 1
        i += 1


def main(argv):
    limit = 150
    if len(argv) > 1 and argv[0] == '--max':
        limit, argv = int(argv[1]), argv[2:]
    bad = 0
    for root in argv or ['.']:
        for d, _, files in os.walk(root):
            for name in sorted(files):
                if name.endswith('.rs'):
                    p = os.path.join(d, name)
                    for fn, line, n in functions(p):
                        if n > limit:
                            print(f'{p}:{line}: fn {fn} is {n} lines (max {limit})')
                            bad += 1
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
