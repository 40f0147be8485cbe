"""Pure gate of `POST /v1/sql`: proves a text is exactly one read-only statement, or refuses it.

ClickHouse's own parser is not available here, so this lexes the text the way ClickHouse does for the plain cases
(words, numbers, '…' strings, `…` and "…" identifiers with backslash escapes and doubled quotes, `--` and `/* */`
comments, `{name:Type}` parameters) and refuses whatever it cannot read the same way for certain: `#` comments,
`$…$` heredocs, nested comments, `//`, a backslash or a non-ASCII character outside quotes, map literals. Then:

- one statement: a `;` may only end the text;
- it starts with SELECT, WITH, EXPLAIN (of a SELECT), DESCRIBE/DESC or SHOW;
- no word that writes or leaves the engine appears anywhere outside quotes (INSERT, INTO … OUTFILE, ALTER, DELETE,
  SETTINGS, APPLY, FORMAT, …), nor a call of a function that reads files or reaches other hosts (`file()`, `url()`,
  `s3()`, `remote()`, …), nor a call through a quoted name.

A false refusal costs an analyst a rewrite; a false acceptance could wedge ingest, so doubt refuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STATEMENTS = ("SELECT", "WITH", "EXPLAIN", "DESCRIBE", "DESC", "SHOW")

# Words that start or form a statement or clause that writes, changes the session, or sends results elsewhere.
FORBIDDEN_WORDS = frozenset({
    "INSERT", "INTO", "OUTFILE", "UPDATE", "DELETE", "ALTER", "CREATE", "DROP", "UNDROP", "TRUNCATE", "RENAME",
    "EXCHANGE", "ATTACH", "DETACH", "OPTIMIZE", "KILL", "GRANT", "REVOKE", "SET", "SETTINGS", "USE", "BACKUP",
    "RESTORE", "MOVE", "WATCH", "BEGIN", "COMMIT", "ROLLBACK", "APPLY", "FORMAT", "COMPRESSION", "TRANSACTION",
})
# Function names (lower case) that read the file system or reach another host, refused wherever they are called;
# a name also refused when it starts with one of PREFIXES (their *Cluster, *Secure, *Local variants).
FORBIDDEN_FUNCTIONS = frozenset({
    "input", "hive", "jdbc", "odbc", "gcs", "oss", "cosn", "sqlite", "redis", "mongodb", "mysql", "postgresql",
    "ytsaurus", "meilisearch", "catboostevaluate",
})
FORBIDDEN_PREFIXES = ("file", "url", "s3", "azure", "hdfs", "remote", "cluster", "executable", "iceberg",
                      "deltalake", "hudi", "paimon", "arrowflight", "prometheus", "timeseries", "kafka", "nats",
                      "rabbitmq")
EXPLAIN_KINDS = frozenset({"AST", "SYNTAX", "QUERY", "TREE", "PLAN", "PIPELINE", "ESTIMATE"})

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"0[xX][0-9A-Fa-f]+|0[bB][01]+|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# {name:Type}, written as the driver recognises it (no space around the name): it then binds the value in the engine
_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):(?:[A-Za-z0-9_(), ]|'[A-Za-z0-9_/+\-: ]*')+\}")
_OPERATORS = ("::", "->", "||", "!=", "<>", "<=", ">=", "==", "(", ")", "[", "]", ",", ".", ";", ":", "+", "-", "*",
              "/", "%", "=", "<", ">", "?")
_SPACE = " \t\n\r\f\v"
_DIGITS = "0123456789"


class RefusedQuery(ValueError):
    """The text is not provably one read-only statement; the message says what to change."""


@dataclass(frozen=True)
class Token:
    kind: str  # "word", "number", "string", "quoted" (identifier), "parameter", "op"
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Statement:
    sql: str  # the statement without its trailing `;` or comments
    parameters: frozenset[str]  # the names of its {name:Type} parameters


def check(text: str, parameter_names: frozenset[str] | set[str] = frozenset()) -> Statement:
    """The one read-only statement `text` holds; raises RefusedQuery otherwise. `parameter_names`: the caller's
    parameters, each of which must be a {name:Type} placeholder of the statement (bound by the engine, never
    spliced into the text)."""
    tokens = tokenize(text)
    while tokens and tokens[-1].text == ";":
        tokens.pop()
    if not tokens:
        raise RefusedQuery("the query is empty: send one SELECT, WITH … SELECT, EXPLAIN, DESCRIBE or SHOW statement")
    if any(token.text == ";" for token in tokens):
        raise RefusedQuery("send one statement per request: a ';' may only end the query")
    first = tokens[0]
    if first.kind != "word" or first.text.upper() not in STATEMENTS:
        raise RefusedQuery("only read-only statements are accepted (SELECT, WITH … SELECT, EXPLAIN, DESCRIBE, "
                           f"SHOW), not {_show(first)}")
    if first.text.upper() == "EXPLAIN":
        _check_explain(tokens)
    _check_words(tokens)
    placeholders = frozenset(t.text[1:].split(":", 1)[0] for t in tokens if t.kind == "parameter")
    unknown = sorted(set(parameter_names) - placeholders)
    if unknown:
        raise RefusedQuery(f"parameter {unknown[0]!r} has no {{{unknown[0]}:Type}} placeholder in the query: "
                           "parameters are bound by ClickHouse, e.g. WHERE model = {model:String}")
    return Statement(sql=text[:tokens[-1].end], parameters=placeholders)


def tokenize(text: str) -> list[Token]:
    """The significant tokens of `text` (comments and white space dropped); RefusedQuery where the text could be
    read another way by ClickHouse."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            if "\r" in text[i:end]:
                raise RefusedQuery("a '--' comment may not hold a carriage return: end it with a new line")
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise RefusedQuery("a '/*' comment is not closed: close it with '*/'")
            if "/*" in text[i + 2:end]:
                raise RefusedQuery("nested '/*' comments are not accepted: remove the inner one")
            i = end + 2
        elif c in "'`\"":
            end = _closing_quote(text, i)
            tokens.append(Token("string" if c == "'" else "quoted", text[i:end], i, end))
            i = end
        elif c == "{":
            match = _PARAMETER.match(text, i)
            if match is None or not _balanced(match.group(0)):
                raise RefusedQuery("'{' may only open a query parameter such as {model:String}")
            tokens.append(Token("parameter", match.group(0), i, match.end()))
            i = match.end()
        elif c.isascii() and (c.isalpha() or c == "_"):
            match = _WORD.match(text, i)
            assert match is not None
            tokens.append(Token("word", match.group(0), i, match.end()))
            i = match.end()
        elif c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
            match = _NUMBER.match(text, i)
            assert match is not None
            end = match.end()
            if end < n and (text[end].isalnum() or text[end] in "_."):
                raise RefusedQuery(f"cannot read the number at character {i}: separate it from what follows")
            tokens.append(Token("number", text[i:end], i, end))
            i = end
        else:
            op = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if op is None or text.startswith("//", i):
                raise RefusedQuery(f"the character {c!r} at position {i} is not accepted outside quotes "
                                   "(no '#' comments, '$' heredocs, '//' or map literals)")
            tokens.append(Token("op", op, i, i + len(op)))
            i += len(op)
    return tokens


def _closing_quote(text: str, start: int) -> int:
    """The index just past the quote that closes the one at `start` (backslash escapes, doubled quotes)."""
    quote = text[start]
    i, n = start + 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == quote:
            if i + 1 < n and text[i + 1] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise RefusedQuery(f"the {quote} opened at position {start} is not closed")


def _balanced(placeholder: str) -> bool:
    """Whether the parentheses of a {name:Type} placeholder's type pair up (outside its quoted parts)."""
    depth = 0
    for c in re.sub(r"'[^']*'", "", placeholder):
        depth += (c == "(") - (c == ")")
        if depth < 0:
            return False
    return depth == 0


def _check_explain(tokens: list[Token]) -> None:
    """EXPLAIN [kind] [name = value, …] then a SELECT or WITH: never an EXPLAIN of another statement."""
    i = 1
    while i < len(tokens) and tokens[i].kind == "word" and tokens[i].text.upper() in EXPLAIN_KINDS:
        i += 1
    while i + 2 < len(tokens) and tokens[i].kind == "word" and tokens[i + 1].text == "=" \
            and tokens[i + 2].kind in ("number", "word") and tokens[i].text.upper() not in ("SELECT", "WITH"):
        i += 3
        if i < len(tokens) and tokens[i].text == ",":
            i += 1
    if i >= len(tokens) or tokens[i].kind != "word" or tokens[i].text.upper() not in ("SELECT", "WITH"):
        raise RefusedQuery("EXPLAIN is accepted for a SELECT only: EXPLAIN [PLAN|AST|SYNTAX|PIPELINE|ESTIMATE] "
                           "SELECT …")


def _check_words(tokens: list[Token]) -> None:
    show = tokens[0].text.upper() == "SHOW"
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        called = following is not None and following.text == "("
        if token.kind == "quoted" and called:
            raise RefusedQuery(f"call functions by their plain name, not the quoted {token.text}")
        if token.kind != "word":
            continue
        word = token.text.upper()
        if word in FORBIDDEN_WORDS and not (called and word == "FORMAT"):  # format(…), the function
            if show and index == 1 and word in ("CREATE", "SETTINGS"):  # SHOW CREATE TABLE …, SHOW SETTINGS LIKE …
                continue
            raise RefusedQuery(f"{word} is not accepted here: this endpoint only reads (one SELECT, WITH … SELECT, "
                               "EXPLAIN, DESCRIBE or SHOW, without SETTINGS, FORMAT or INTO OUTFILE)")
        name = token.text.lower()
        if called and (name in FORBIDDEN_FUNCTIONS or name.startswith(FORBIDDEN_PREFIXES)):
            raise RefusedQuery(f"{token.text}() reads files or other hosts and is not accepted here: query the "
                               "tables of this database")


def _show(token: Token) -> str:
    return repr(token.text[:40])
