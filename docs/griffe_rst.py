"""Read the package's docstrings as the API reference shows them.

The docstrings are written for readers of the source: reStructuredText roles (``:math:``,
``:func:``, …), ``.. math::`` blocks, ``::`` literal blocks and simple ``=====`` tables, with
Google-style ``Args:`` / ``Returns:`` sections. mkdocstrings renders Markdown, so this griffe
extension rewrites each docstring once, after the package is loaded:

- ``:math:`x``` becomes inline math and ``.. math::`` a display block (MathJax);
- ``:func:`name``` (and ``class``, ``meth``, ``mod``, ``data``, ``attr``) becomes a link when
  the name resolves to a documented object of the package, else inline code;
- a simple table becomes a Markdown table; a paragraph ending in ``::`` loses one colon (the
  indented block after it is already a Markdown code block).
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(func|class|meth|mod|data|attr|obj|exc):`(~?)([^`]+)`")
INLINE_MATH = re.compile(r":math:`([^`]+)`")
TABLE_RULE = re.compile(r"^ *=+( +=+)+ *$")
LINKABLE = (griffe.Kind.MODULE, griffe.Kind.CLASS, griffe.Kind.FUNCTION)


def math_blocks(text: str) -> str:
    """``.. math::`` and its indented body → a ``$$ … $$`` block (``aligned`` if multi-line)."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        m = re.match(r"^( *)\.\. math::\s*(.*)$", lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, body = len(m.group(1)), [m.group(2)] if m.group(2) else []
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i].strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        tex = "\n".join(b for b in body if b)
        if "\\\\" in tex or "&" in tex:
            tex = "\\begin{aligned}\n" + tex + "\n\\end{aligned}"
        pad = " " * indent
        out += ["", f"{pad}$$", *[pad + t for t in tex.split("\n")], f"{pad}$$", ""]
    return "\n".join(out)


def simple_tables(text: str) -> str:
    """reStructuredText simple tables (``=====  ====`` rules) → Markdown tables."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        if not TABLE_RULE.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        rule = lines[i]
        spans = [(m.start(), m.end()) for m in re.finditer(r"=+", rule)]
        rows, rules, i = [], 1, i + 1
        while i < len(lines) and rules < 3:
            line = lines[i]
            i += 1
            if TABLE_RULE.match(line):
                rules += 1
                if rules == 2:
                    rows.append(None)  # the header / body separator
                continue
            # a cell is a run of words separated by single spaces; it belongs to the column
            # whose rule starts at or just before it (robust to text overhanging a rule)
            cells = [""] * len(spans)
            for chunk in re.finditer(r"\S+(?: \S+)*", line):
                k = max(j for j, (a, _) in enumerate(spans) if a <= chunk.start() + 1 or j == 0)
                cells[k] = f"{cells[k]} {chunk.group()}".strip()
            if rows and rows[-1] is not None and not cells[0]:  # continuation line
                rows[-1] = [f"{p} {c}".strip() for p, c in zip(rows[-1], cells, strict=True)]
            else:
                rows.append(cells)
        table = []
        for row in rows:
            if row is None:
                table.append("|" + "|".join("---" for _ in spans) + "|")
            else:
                table.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        out += ["", *table, ""]
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring of the package once it is loaded (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        self.pkg = pkg
        for obj in self._walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self.convert(obj.docstring.value, obj)

    def _walk(self, obj):
        yield obj
        for member in obj.members.values():
            if not member.is_alias:
                yield from self._walk(member)

    def convert(self, text: str, ctx) -> str:
        text = math_blocks(text)
        text = simple_tables(text)
        text = INLINE_MATH.sub(lambda m: f"\\({m.group(1)}\\)", text)
        text = ROLE.sub(lambda m: self._reference(m.group(3), bool(m.group(2)), ctx), text)
        text = re.sub(r"(?<=\S)::$", ":", text, flags=re.M)
        return text

    def _reference(self, name: str, short: bool, ctx) -> str:
        name = name.strip()
        shown = name.split(".")[-1] if short else name
        target = self._resolve(name, ctx)
        return f"[`{shown}`][{target}]" if target else f"`{shown}`"

    def _resolve(self, name: str, ctx) -> str | None:
        """The documented object ``name`` refers to, seen from ``ctx``; None if there is none."""
        root = self.pkg.path + "."
        candidates = [name] if name.startswith(root) else []
        scope = ctx
        while scope is not None:
            candidates.append(f"{scope.path}.{name}")
            scope = scope.parent
        for path in candidates:
            if not path.startswith(root):
                continue
            try:
                obj = self.pkg[path[len(root) :]]
                if obj.is_alias:
                    obj = obj.final_target
            except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
            public = not any(p.startswith("_") for p in obj.path.split("."))
            if obj.kind in LINKABLE and public and obj.docstring is not None:
                return obj.path
        return None
