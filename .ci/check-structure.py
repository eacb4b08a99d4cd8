#!/usr/bin/env python3
"""Structure checks CI runs before the tests (issue 9: units a newcomer can hold in their head).

1. No function longer than MAX_LINES lines (from its `fn` line to its closing brace) in the
   crates listed in LENGTH_CRATES.
2. No import cycle between the modules of a crate (every crate under crates/): an edge A -> B for
   each `crate::B...` or `super::...` path in A's code (uses and expressions alike), resolved to
   the longest module the path names. Edges from a module to one of its own ancestors (a child
   using its parent's items) and code in inline `mod NAME { ... }` blocks (unit tests) are not
   edges; a cycle is a strongly connected component of two modules or more.

Usage: python3 .ci/check-structure.py [--list N]   (--list N also prints the N longest functions)
Exit status 1 when a check fails, with every offender named.
"""

import os
import re
import sys

MAX_LINES = 150
LENGTH_CRATES = ["elevated", "linux", "sys"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CRATES = os.path.join(ROOT, "crates")


def blank_out(src):
    """The source with comments, string and char literals replaced by spaces (newlines kept),
    so that braces and paths inside them are not seen."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:]) and not (
            i and (src[i - 1].isalnum() or src[i - 1] == "_") and not (src[i - 1] == "b" and (i < 2 or not (src[i - 2].isalnum() or src[i - 2] == "_")))
        ):
            m = re.match(r'r(#*)"', src[i:])
            end = '"' + m.group(1)
            j = src.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}', b'x' handled by the same branch) or a lifetime.
            m = re.match(r"'(\\[^']*|[^'\\\n])'", src[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def rust_files(top):
    for d, dirs, files in os.walk(top):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(d, f)


FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def long_functions(path):
    """(name, first line, length) of every function with a body in `path`."""
    text = blank_out(open(path, encoding="utf-8").read())
    line_of = [0]
    for k, ch in enumerate(text):
        if ch == "\n":
            line_of.append(k + 1)

    def line(pos):
        lo, hi = 0, len(line_of) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if line_of[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    out = []
    for m in FN.finditer(text):
        # The body starts at the first `{` at bracket depth 0 after the signature; a `;` first
        # means a declaration without a body (trait method, extern).
        j, depth = m.end(), 0
        while j < len(text):
            ch = text[j]
            if text.startswith("->", j):
                j += 2
                continue
            if ch in "([<":
                depth += 1
            elif ch in ")]>":
                depth = max(0, depth - 1)
            elif ch == ";" and depth == 0:
                j = -1
                break
            elif ch == "{" and depth == 0:
                break
            j += 1
        if j < 0 or j >= len(text):
            continue
        k = closing_brace(text, j)
        first, last = line(m.start()), line(k)
        out.append((m.group(1), first, last - first + 1))
    return out


def closing_brace(text, k):
    """The index of the `}` closing the `{` at `k` (`len(text)` when it is never closed)."""
    braces = 0
    while k < len(text):
        if text[k] == "{":
            braces += 1
        elif text[k] == "}":
            braces -= 1
            if braces == 0:
                break
        k += 1
    return k


def module_of(src_dir, path):
    rel = os.path.relpath(path, src_dir)[:-3].split(os.sep)
    if rel[-1] in ("lib", "main", "mod"):
        rel = rel[:-1]
    if rel and rel[0] == "bin":
        return None  # each binary is its own crate root
    return tuple(rel)


def strip_inline_mods(text):
    """`text` without the bodies of inline `mod NAME { ... }` blocks."""
    out, i = [], 0
    for m in re.finditer(r"\bmod\s+[A-Za-z_][A-Za-z0-9_]*\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        i = closing_brace(text, m.end() - 1) + 1
    out.append(text[i:])
    return "".join(out)


PATH = re.compile(r"\b(crate|super)((?:\s*::\s*(?:super|[A-Za-z_][A-Za-z0-9_]*))+)")
GROUP = re.compile(r"\b(crate|super)((?:\s*::\s*(?:super|[A-Za-z_][A-Za-z0-9_]*))*)\s*::\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")


def edges_of(mod, text, modules):
    text = strip_inline_mods(text)
    targets = set()

    def resolve(head, segs):
        if head == "crate":
            base = ()
        else:
            base = mod[:-1] if mod else ()
        for s in segs:
            if s == "super":
                base = base[:-1]
            else:
                base = base + (s,)
        # Longest prefix that is a module.
        while base and base not in modules:
            base = base[:-1]
        return base

    def segs_of(tail):
        return [s for s in re.split(r"\s*::\s*", tail.strip()) if s]

    for m in GROUP.finditer(text):
        head, tail = m.group(1), segs_of(m.group(2))
        for item in re.split(r",", m.group(3)):
            item = item.strip().split(" as ")[0].strip()
            if not item or item == "self" or item == "*":
                targets.add(resolve(head, tail))
                continue
            inner = re.match(r"([A-Za-z_][A-Za-z0-9_:\s]*)", item)
            if inner:
                targets.add(resolve(head, tail + segs_of(inner.group(1).replace("{", ""))))
    for m in PATH.finditer(text):
        targets.add(resolve(m.group(1), segs_of(m.group(2))))
    out = set()
    for t in targets:
        if t == mod:
            continue
        if mod[: len(t)] == t:
            continue  # an ancestor: a child using its parent's items
        out.add(t)
    return out


def sccs(graph):
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def name(mod):
    return "crate" if not mod else "::".join(mod)


def main():
    listing = 0
    if "--list" in sys.argv:
        listing = int(sys.argv[sys.argv.index("--list") + 1])
    failed = False
    all_fns = []
    for c in LENGTH_CRATES:
        src = os.path.join(CRATES, c, "src")
        if not os.path.isdir(src):
            continue
        for p in rust_files(src):
            for fn, first, length in long_functions(p):
                all_fns.append((length, os.path.relpath(p, ROOT), first, fn))
    all_fns.sort(reverse=True)
    for length, p, first, fn in all_fns:
        if length > MAX_LINES:
            print(f"too long: {p}:{first} fn {fn} is {length} lines (at most {MAX_LINES})")
            failed = True
    for length, p, first, fn in all_fns[:listing]:
        print(f"  {length:4} {p}:{first} fn {fn}")

    for c in sorted(os.listdir(CRATES)):
        src = os.path.join(CRATES, c, "src")
        if not os.path.isdir(src):
            continue
        files = {}
        for p in rust_files(src):
            m = module_of(src, p)
            if m is not None:
                files[m] = p
        modules = set(files)
        graph = {}
        for m, p in files.items():
            text = blank_out(open(p, encoding="utf-8").read())
            graph[m] = edges_of(m, text, modules)
        for comp in sccs(graph):
            if len(comp) > 1:
                mods = sorted(comp)
                detail = []
                for a in mods:
                    for b in sorted(graph[a]):
                        if b in comp:
                            detail.append(f"{name(a)} -> {name(b)}")
                print(f"import cycle in crates/{c}: {', '.join(name(m) for m in mods)} ({'; '.join(detail)})")
                failed = True
    if failed:
        return 1
    print(f"structure ok: no function over {MAX_LINES} lines in crates/{{{','.join(LENGTH_CRATES)}}}/src, no import cycle between modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
