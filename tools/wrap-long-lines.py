#!/usr/bin/env python3
"""Wraps C# lines longer than a limit (default 140): comments at word boundaries, code after a comma,
'&&', '||', '=>', or before '?' / ':' of a conditional, outside string literals. The compiler checks
the result (a break inside a literal does not compile); run the build and the tests after it.

    tools/wrap-long-lines.py [--limit 140] FILE...
"""
import re
import sys

LIMIT = 140


def string_text(line):
    """For each character: the kind of the top-level string literal whose text it is ('n' plain, 'i' interpolated;
    None elsewhere: code, interpolation holes, nested literals, verbatim and char literals, which are never split)."""
    text = [None] * len(line)
    n = len(line)

    def literal(i, mark):
        """Scans the literal starting at i (at its prefix); returns the index after its closing quote."""
        m = re.match(r'(\$@|@\$|\$|@)?"', line[i:])
        pre = m.group(1) or ''
        verbatim, interpolated = '@' in pre, '$' in pre
        kind = None if verbatim or not mark else ('i' if interpolated else 'n')
        j = i + len(m.group(0))
        while j < n:
            c = line[j]
            if c == '\\' and not verbatim:
                j += 2
                continue
            if c == '"':
                if verbatim and line.startswith('""', j):
                    j += 2
                    continue
                return j + 1
            if c == '{' and interpolated:
                if line.startswith('{{', j):
                    j += 2
                    continue
                j = hole(j + 1)
                continue
            text[j] = kind
            j += 1
        return n

    def hole(j):
        """Skips an interpolation hole from after its '{'; returns the index after its '}'."""
        depth = 1
        while j < n:
            c = line[j]
            if c == "'":
                k = j + 1
                while k < n and line[k] != "'":
                    k += 2 if line[k] == '\\' else 1
                j = k + 1
                continue
            if re.match(r'(\$@|@\$|\$|@)?"', line[j:]):
                j = literal(j, False)
                continue
            if c == '{':
                depth += 1
            elif c == '}':
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return n

    i = 0
    while i < n:
        if line.startswith('//', i):
            break
        if line[i] == "'":
            k = i + 1
            while k < n and line[k] != "'":
                k += 2 if line[k] == '\\' else 1
            i = k + 1
            continue
        if re.match(r'(\$@|@\$|\$|@)?"', line[i:]):
            i = literal(i, True)
            continue
        i += 1
    return text


def string_mask(line):
    """For each character: True when it is inside a string or char literal (or a // comment)."""
    mask = [False] * len(line)
    i, n = 0, len(line)
    stack = []  # per open string: (kind, brace depth) kind: 'n' normal, 'v' verbatim, 'i' interpolated, 'iv'
    depth = 0
    while i < n:
        c = line[i]
        if not stack:
            if line.startswith('//', i):
                for k in range(i, n):
                    mask[k] = True
                break
            if c == "'":
                j = i + 1
                while j < n and line[j] != "'":
                    j += 2 if line[j] == '\\' else 1
                for k in range(i, min(j + 1, n)):
                    mask[k] = True
                i = j + 1
                continue
            m = re.match(r'(\$@|@\$|\$|@)?"', line[i:])
            if m:
                pre = m.group(1) or ''
                kind = ('i' if '$' in pre else '') + ('v' if '@' in pre else '') or 'n'
                for k in range(i, i + len(m.group(0))):
                    mask[k] = True
                stack.append([kind, 0])
                i += len(m.group(0))
                continue
            if c == '{':
                depth += 1
            i += 1
            continue
        kind, braces = stack[-1]
        if braces > 0:
            # inside an interpolation hole: code, but nested strings possible
            if c == '{':
                stack[-1][1] += 1
            elif c == '}':
                stack[-1][1] -= 1
            elif c == '"':
                m = re.match(r'(\$@|@\$|\$|@)?"', line[i:])
                stack.append(['n', 0])
            mask[i] = True
            i += 1
            continue
        mask[i] = True
        if c == '\\' and 'v' not in kind:
            if i + 1 < n:
                mask[i + 1] = True
            i += 2
            continue
        if c == '"':
            if 'v' in kind and line.startswith('""', i):
                mask[i + 1] = True
                i += 2
                continue
            stack.pop()
            i += 1
            continue
        if c == '{' and 'i' in kind:
            if line.startswith('{{', i):
                mask[i + 1] = True
                i += 2
                continue
            stack[-1][1] = 1
        i += 1
    return mask, bool(stack)


def wrap_comment(line, limit):
    m = re.match(r'^(\s*)(///|//)\s?(.*)$', line)
    if not m:
        return None
    indent, marker, text = m.groups()
    prefix = f'{indent}{marker} '
    words = text.split(' ')
    out, cur = [], ''
    for w in words:
        if cur and len(prefix) + len(cur) + 1 + len(w) > limit:
            out.append(prefix + cur)
            cur = w
        else:
            cur = w if not cur else cur + ' ' + w
    if cur:
        out.append(prefix + cur)
    return out if all(len(o) <= limit for o in out) or len(out) > 1 else None


BREAKS = [', ', ' && ', ' || ', ' => ', ' ? ', ' : ', ' + ', ' ?? ', ' or ', ' and ', '; ']


def wrap_code(line, limit, mask):
    indent = re.match(r'^(\s*)', line).group(1)
    cont = indent + '    '
    # Bracket depth before each character (outside literals): breaks at the shallowest level read best.
    depth, d = [0] * (len(line) + 1), 0
    for i, c in enumerate(line):
        depth[i] = d
        if not mask[i]:
            if c in '([{':
                d += 1
            elif c in ')]}':
                d = max(d - 1, 0)
    prefix, pos0 = '', 0          # the current line is prefix + line[pos0:]
    out = []
    while len(prefix) + len(line) - pos0 > limit:
        rest = prefix + line[pos0:]
        candidates = []
        for b in BREAKS:
            start = len(prefix)
            while True:
                k = rest.find(b, start)
                if k < 0 or k + len(b) > limit:
                    break
                g = pos0 + (k - len(prefix))
                if not mask[g] and k > len(cont) + 10 and not any(mask[g:g + len(b)]):
                    # break after ', ' '&& ' '|| ' '=> '; before '? ' ': ' '+ ' '?? '
                    cut = k + len(b) if b in (', ', ' && ', ' || ', ' => ', '; ') else k + 1
                    candidates.append((depth[g], -cut, cut))
                start = k + 1
        # A statement after an if/foreach/while header goes on the next line first.
        if not out:
            hm = re.match(r'^(\s*)(else if|if|foreach|for|while|using|lock) \(', line)
            if hm:
                i, dd = hm.end() - 1, 0
                while i < len(line):
                    if not mask[i]:
                        if line[i] == '(':
                            dd += 1
                        elif line[i] == ')':
                            dd -= 1
                            if dd == 0:
                                break
                    i += 1
                if i + 2 < len(line) and i + 1 <= limit and line[i + 1:].strip() not in ('', '{'):
                    candidates.append((-1, 0, i + 1))
        if not candidates:
            # Split a long plain or interpolated string literal at a space: "a b" → "a " + "b".
            text = string_text(line)
            cut = -1
            for k in range(min(limit - 4, len(rest) - 1), len(prefix) + 10, -1):
                g = pos0 + (k - len(prefix))
                if rest[k] == ' ' and text[g] and g + 1 < len(line) and text[g + 1] is not None:
                    cut = k
                    break
            if cut < 0:
                break
            g = pos0 + (cut - len(prefix))
            kind = text[g]
            out.append(rest[:cut + 1] + '" +')
            # The line from here on reads as the two literals joined, so that masks stay true.
            line = line[:g + 1] + '" + ' + ('$"' if kind == 'i' else '"') + line[g + 1:]
            mask, _ = string_mask(line)
            depth = depth[:g + 1] + [depth[g]] * 4 + depth[g + 1:]
            prefix, pos0 = cont, g + 5
            continue
        best = min(candidates)[2]
        out.append(rest[:best].rstrip())
        g = pos0 + (best - len(prefix))
        while g < len(line) and line[g] == ' ':
            g += 1
        prefix, pos0 = cont, g
    if not out:
        return None
    out.append(prefix + line[pos0:])
    return out


def process(path, limit):
    src = open(path, encoding='utf-8').read().split('\n')
    out, changed, in_raw = [], 0, False
    for line in src:
        if '"""' in line:
            if line.count('"""') % 2 == 1:
                in_raw = not in_raw
            out.append(line)
            continue
        if in_raw or len(line) <= limit:
            out.append(line)
            continue
        stripped = line.lstrip()
        if stripped.startswith('//'):
            w = wrap_comment(line, limit)
            if w:
                out.extend(w)
                changed += 1
                continue
            out.append(line)
            continue
        mask, open_string = string_mask(line)
        if open_string:
            out.append(line)
            continue
        # A trailing // comment goes on its own line above.
        code, comment = line, None
        for k in range(len(line) - 1):
            if line.startswith('//', k) and mask[k] and (k == 0 or not mask[k - 1]) and line[:k].strip():
                code, comment = line[:k].rstrip(), line[k:]
                break
        if comment is not None:
            indent = re.match(r'^(\s*)', line).group(1)
            cw = wrap_comment(indent + comment, limit) or [indent + comment]
            out.extend(cw)
            changed += 1
            if len(code) <= limit:
                out.append(code)
                continue
            mask, _ = string_mask(code)
        w = wrap_code(code, limit, mask)
        if w:
            out.extend(w)
            changed += 1
        else:
            out.append(code)
    if changed:
        open(path, 'w', encoding='utf-8').write('\n'.join(out))
    return changed


def main():
    args = sys.argv[1:]
    limit = LIMIT
    if args[:1] == ['--limit']:
        limit = int(args[1])
        args = args[2:]
    total = 0
    for p in args:
        total += process(p, limit)
    print(f'{total} lines wrapped')


if __name__ == '__main__':
    main()
