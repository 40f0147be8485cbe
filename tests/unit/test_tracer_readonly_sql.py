"""The `/v1/sql` gate: exactly one read-only statement passes; writes, several statements, settings, output files
and functions that reach outside are refused before the engine sees them."""

from __future__ import annotations

import pytest

from services.tracer.readonly_sql import RefusedQuery, check, tokenize

ACCEPTED = [
    ("SELECT 1", "SELECT 1"),
    ("  select count() AS n FROM traces FINAL WHERE organization_id = {org:String};  ",
     "  select count() AS n FROM traces FINAL WHERE organization_id = {org:String}"),
    ("SELECT 1;;", "SELECT 1"),
    ("SELECT 1 -- a trailing comment", "SELECT 1"),
    ("SELECT 1; -- done\n", "SELECT 1"),
    ("/* leading */ SELECT 'INSERT INTO t; DROP TABLE x' AS s",
     "/* leading */ SELECT 'INSERT INTO t; DROP TABLE x' AS s"),
    ("SELECT `insert`, \"drop\" FROM t", "SELECT `insert`, \"drop\" FROM t"),
    ("SELECT 'it''s', 'a\\'b', '--not a comment' FROM t", "SELECT 'it''s', 'a\\'b', '--not a comment' FROM t"),
    ("WITH 2 AS x SELECT x", "WITH 2 AS x SELECT x"),
    ("WITH t AS (SELECT 1 AS a) SELECT a FROM t ORDER BY a WITH FILL LIMIT 1 WITH TIES",
     "WITH t AS (SELECT 1 AS a) SELECT a FROM t ORDER BY a WITH FILL LIMIT 1 WITH TIES"),
    ("EXPLAIN SELECT 1", "EXPLAIN SELECT 1"),
    ("EXPLAIN PLAN header = 1, actions = 1 SELECT 1", "EXPLAIN PLAN header = 1, actions = 1 SELECT 1"),
    ("EXPLAIN QUERY TREE SELECT 1", "EXPLAIN QUERY TREE SELECT 1"),
    ("DESCRIBE TABLE traces", "DESCRIBE TABLE traces"),
    ("desc traces", "desc traces"),
    ("SHOW TABLES", "SHOW TABLES"),
    ("SHOW CREATE TABLE traces", "SHOW CREATE TABLE traces"),
    ("SELECT name, data_paths FROM system.tables WHERE database = currentDatabase()",
     "SELECT name, data_paths FROM system.tables WHERE database = currentDatabase()"),
    ("SELECT count() FROM `usage_minute` WHERE position(toString(`model`), {needle:String}) > 0 "
     "AND type LIKE '%String%'",
     "SELECT count() FROM `usage_minute` WHERE position(toString(`model`), {needle:String}) > 0 "
     "AND type LIKE '%String%'"),
    ("SELECT format('{} {}', 'a', 'b'), x::Int64, arrayMap(y -> y * 2, [1, 2]), 0x1F, 1.5e-3, .5 % 2",
     "SELECT format('{} {}', 'a', 'b'), x::Int64, arrayMap(y -> y * 2, [1, 2]), 0x1F, 1.5e-3, .5 % 2"),
    ("SELECT * FROM traces WHERE ts > {since:DateTime64(3, 'UTC')} AND (a, b) IN {pairs:Array(Tuple(String, Int64))}",
     "SELECT * FROM traces WHERE ts > {since:DateTime64(3, 'UTC')} AND (a, b) IN {pairs:Array(Tuple(String, Int64))}"),
    ("SELECT 'é', \"naïve\" FROM t", "SELECT 'é', \"naïve\" FROM t"),
    ("SELECT deltaSum(x), URLHash AS a_column FROM t", "SELECT deltaSum(x), URLHash AS a_column FROM t"),
]


@pytest.mark.parametrize(("text", "statement"), ACCEPTED)
def test_read_only_statements_pass_without_their_trailing_semicolons(text: str, statement: str) -> None:
    assert check(text).sql == statement


REFUSED = [
    # writes and session changes
    ("INSERT INTO traces VALUES (1)", "not 'INSERT'"),
    ("insert into t select 1", "not 'insert'"),
    ("ALTER TABLE traces DELETE WHERE 1", "not 'ALTER'"),
    ("DELETE FROM traces WHERE 1", "not 'DELETE'"),
    ("CREATE TABLE t (x UInt8) ENGINE = Memory", "not 'CREATE'"),
    ("DROP TABLE traces", "not 'DROP'"),
    ("TRUNCATE TABLE traces", "not 'TRUNCATE'"),
    ("SET readonly = 0", "not 'SET'"),
    ("OPTIMIZE TABLE traces FINAL", "not 'OPTIMIZE'"),
    ("SYSTEM STOP MERGES", "not 'SYSTEM'"),
    ("KILL QUERY WHERE 1", "not 'KILL'"),
    ("USE system", "not 'USE'"),
    ("GRANT ALL ON *.* TO default", "not 'GRANT'"),
    ("RENAME TABLE a TO b", "not 'RENAME'"),
    ("EXISTS TABLE traces", "not 'EXISTS'"),
    ("(SELECT 1)", "not '\\('"),
    ("'SELECT 1'", "not \"'SELECT 1'\""),
    ("", "empty"),
    ("  ;  -- nothing", "empty"),
    # several statements
    ("SELECT 1; DROP TABLE traces", "one statement"),
    ("SELECT 1;\nINSERT INTO t VALUES (1)", "one statement"),
    ("SELECT 1 ; ; SELECT 2", "one statement"),
    # writes or side effects hidden inside a SELECT
    ("SELECT 1 INTO OUTFILE '/tmp/x'", "INTO is not accepted"),
    ("SELECT 1 SETTINGS readonly = 0", "SETTINGS is not accepted"),
    ("SELECT 1 SETTINGS max_threads = 1", "SETTINGS is not accepted"),
    ("SELECT 1 FORMAT TabSeparated", "FORMAT is not accepted"),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "INSERT is not accepted"),
    ("SELECT * FROM (SELECT 1) APPLY file", "APPLY is not accepted"),
    ("SELECT * APPLY(file) FROM (SELECT '/etc/passwd' AS p)", "APPLY is not accepted"),
    ("EXPLAIN AST INSERT INTO t VALUES (1)", "EXPLAIN is accepted for a SELECT only"),
    ("EXPLAIN SYSTEM FLUSH LOGS", "EXPLAIN is accepted for a SELECT only"),
    ("EXPLAIN PLAN header = 1, DROP = 1 TABLE x", "EXPLAIN is accepted for a SELECT only"),
    # functions that read files or reach other hosts, in any position, any case, any spacing
    ("SELECT file('/etc/passwd')", "file\\(\\) reads files"),
    ("SELECT FILE ('/etc/passwd')", "FILE\\(\\) reads files"),
    ("SELECT file/* c */('/etc/passwd')", "file\\(\\) reads files"),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "file\\(\\) reads files"),
    ("SELECT * FROM fileCluster('c', '/etc/passwd')", "fileCluster\\(\\) reads files"),
    ("SELECT * FROM url('http://x/', 'CSV', 'a UInt8')", "url\\(\\) reads files"),
    ("SELECT * FROM s3('http://x/b/k', 'CSV')", "s3\\(\\) reads files"),
    ("SELECT * FROM s3Cluster('c', 'http://x/b/k')", "s3Cluster\\(\\) reads files"),
    ("SELECT * FROM remote('127.0.0.1:9000', system.one)", "remote\\(\\) reads files"),
    ("SELECT * FROM remoteSecure('h', db.t)", "remoteSecure\\(\\) reads files"),
    ("SELECT * FROM clusterAllReplicas('c', db.t)", "clusterAllReplicas\\(\\) reads files"),
    ("SELECT * FROM mysql('h:3306', 'db', 't', 'u', 'p')", "mysql\\(\\) reads files"),
    ("SELECT * FROM postgresql('h', 'db', 't', 'u', 'p')", "postgresql\\(\\) reads files"),
    ("SELECT * FROM executable('x.sh', 'TSV', 'a UInt8')", "executable\\(\\) reads files"),
    ("SELECT * FROM hdfs('hdfs://h/x', 'TSV')", "hdfs\\(\\) reads files"),
    ("SELECT * FROM azureBlobStorage('c', 'x')", "azureBlobStorage\\(\\) reads files"),
    ("SELECT * FROM icebergLocal('/data')", "icebergLocal\\(\\) reads files"),
    ("SELECT * FROM sqlite('/tmp/db', 't')", "sqlite\\(\\) reads files"),
    ("SELECT * FROM gcs('https://x', 'CSV')", "gcs\\(\\) reads files"),
    ("SELECT catboostEvaluate('/m.bin', 1)", "catboostEvaluate\\(\\) reads files"),
    ("DESCRIBE TABLE url('http://x/', 'CSV')", "url\\(\\) reads files"),
    ("SELECT arrayMap(p -> file(p), ['/etc/passwd'])", "file\\(\\) reads files"),
    ("SELECT `file`('/etc/passwd')", "quoted `file`"),
    ("SELECT \"file\"('/etc/passwd')", "quoted \"file\""),
    ("SELECT URLHash('x')", "URLHash\\(\\) reads files"),  # a false refusal, accepted: prefixes are coarse
    # text ClickHouse could read differently from this lexer
    ("SELECT 1 # comment\n", "'#'"),
    ("SELECT $$x$$", "'\\$'"),
    ("SELECT $t$ '; DROP TABLE x $t$", "'\\$'"),
    ("SELECT 1 /* outer /* inner */ INSERT */", "nested"),
    ("SELECT 1 /* never closed", "not closed"),
    ("SELECT 'never closed", "not closed"),
    ("SELECT `never closed", "not closed"),
    ("SELECT 'a\\", "not closed"),
    ("SELECT 1 -- x\r; DROP TABLE t\n", "carriage return"),
    ("SELECT 1 // x", "'/'"),
    ("SELECT \\N", "'\\\\\\\\'"),
    ("SELECT {'a': 1}", "'\\{' may only open a query parameter"),
    ("SELECT {x:String) UNION ALL SELECT file(1}", "'\\{' may only open a query parameter"),
    ("SELECT { x :String}", "'\\{' may only open a query parameter"),
    ("SELECT {x:String'}", "'\\{' may only open a query parameter"),
    ("SELECT 1INTO OUTFILE 'x'", "cannot read the number"),
    ("SELECT 1_000", "cannot read the number"),
    ("SELECT ‘x’", "not accepted outside quotes"),
    ("SELECT \u201cx\u201d", "not accepted outside quotes"),
    ("SELECT ٣", "not accepted outside quotes"),
    ("SELECT\x001", "not accepted outside quotes"),
]


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_everything_else_is_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(RefusedQuery, match=reason):
        check(text)


def test_parameters_must_be_engine_bound_placeholders() -> None:
    assert check("SELECT {a:UInt8} + {b:String}", {"a", "b"}).parameters == frozenset({"a", "b"})
    with pytest.raises(RefusedQuery, match="'c' has no {c:Type} placeholder"):
        check("SELECT {a:UInt8} + %(c)s", {"a", "c"})


def test_the_statement_keeps_strings_and_comments_intact_inside() -> None:
    text = "SELECT 'a;b' /* ; */, 1 -- tail ;\n ; -- after"
    assert check(text).sql == "SELECT 'a;b' /* ; */, 1"
    assert [t.kind for t in tokenize(text)] == ["word", "string", "op", "number", "op"]
