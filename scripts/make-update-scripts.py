#!/usr/bin/env python3
"""Writes the extension's update scripts, secumon--<release>--<version>.sql, one for every
earlier release, next to the install script of the version being built.

An update script is three parts:
  1. the hand-written steps sql/updates/<a>--<b>.sql from that release up to this version, in
     order: what cannot be re-run (new tables and columns, indexes, dropped policies, config dumps,
     DROP FUNCTION for a changed signature or name);
  2. every function, aggregate, view and trigger of this version's install script, as CREATE OR
     REPLACE, and every policy (dropped and created again), then its COMMENT, GRANT, REVOKE and
     ALTER VIEW/FUNCTION statements replayed in order;
  3. the hand-written sql/updates/<a>--<b>.post.sql steps, in order: data migrations that use
     this version's functions.
So a changed function ships by editing sql/*.sql alone, and every update script gives the
catalog a fresh install gives; tests/tests/upgrade.rs checks that object by object.

usage: make-update-scripts.py INSTALL_SCRIPT UPDATES_DIR
  INSTALL_SCRIPT  the generated secumon--<version>.sql (its directory receives the output)
  UPDATES_DIR     sql/updates
"""
import os
import re
import sys


def statements(sql):
    """Splits SQL text into statements, honouring quotes, dollar quotes and comments."""
    out, start, i, n = [], 0, 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            i = sql.find("\n", i)
            i = n if i < 0 else i + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c in "'\"":
            i += 1
            while i < n:
                if sql[i] == c and sql.startswith(c * 2, i):
                    i += 2
                elif sql[i] == c:
                    i += 1
                    break
                else:
                    i += 1
        elif c == "$" and (m := re.match(r"\$[A-Za-z_][A-Za-z_0-9]*\$|\$\$", sql[i:])) and (
            i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")
        ):
            tag = m.group(0)
            end = sql.find(tag, i + len(tag))
            i = n if end < 0 else end + len(tag)
        elif c == ";":
            out.append(sql[start : i + 1])
            start = i = i + 1
        else:
            i += 1
    return out


def head(statement):
    """The statement's words after leading comments and white space, upper-cased, one space apart."""
    text = re.sub(r"^(\s|--[^\n]*\n|/\*.*?\*/)*", "", statement, flags=re.S)
    return " ".join(text[:80].split()).upper(), text


REPLACEABLE = re.compile(r"^CREATE (OR REPLACE )?(FUNCTION|AGGREGATE|VIEW|TRIGGER) ")
REPLAYED = re.compile(r"^(COMMENT ON|GRANT|REVOKE|ALTER VIEW|ALTER FUNCTION|ALTER AGGREGATE) ")


def latest_definitions(install_sql):
    replaced, replayed = [], []
    for statement in statements(install_sql):
        words, text = head(statement)
        if m := REPLACEABLE.match(words):
            text = re.sub(r"^CREATE\s+(OR\s+REPLACE\s+)?", "CREATE OR REPLACE ", text, count=1, flags=re.I)
            replaced.append(text.strip())
        elif policy := re.match(r"CREATE\s+POLICY\s+(\S+)\s+ON\s+(\S+)", text, flags=re.I):
            # No CREATE OR REPLACE POLICY: drop and create, so a changed policy ships too.
            replaced.append(f"DROP POLICY IF EXISTS {policy.group(1)} ON {policy.group(2)};\n{text.strip()}")
        elif REPLAYED.match(words):
            replayed.append(text.strip())
    return replaced, replayed


def version_key(version):
    return tuple(int(part) for part in version.split("."))


def main(install_script, updates_dir):
    name = os.path.basename(install_script)
    m = re.fullmatch(r"(\w+)--([0-9.]+)\.sql", name)
    if not m:
        sys.exit(f"make-update-scripts: {name} is not an install script name like secumon--0.2.0.sql")
    extension, version = m.groups()
    steps = {}
    for file in os.listdir(updates_dir):
        if s := re.fullmatch(r"([0-9.]+)--([0-9.]+)\.sql", file):
            steps[s.group(1)] = (s.group(2), os.path.join(updates_dir, file))

    def part(path, heading):
        with open(path) as f:
            return f"-- ---- {heading} " + "-" * 60 + "\n" + f.read()

    with open(install_script) as f:
        replaced, replayed = latest_definitions(f.read())
    latest = "\n\n".join(replaced + replayed) + "\n"
    written = []
    for release in sorted(steps, key=version_key):
        chain, post, at = [], [], release
        while at != version:
            if at not in steps:
                sys.exit(f"make-update-scripts: no step from {at} towards {version} in {updates_dir}")
            target, path = steps[at]
            chain.append(part(path, os.path.relpath(path)))
            if os.path.exists(path[: -len(".sql")] + ".post.sql"):
                post.append(part(path[: -len(".sql")] + ".post.sql", os.path.relpath(path[: -len(".sql")] + ".post.sql")))
            at = target
        out = os.path.join(os.path.dirname(install_script), f"{extension}--{release}--{version}.sql")
        with open(out, "w") as f:
            f.write(
                f"-- {extension} {release} -> {version}, made by scripts/make-update-scripts.py from\n"
                f"-- sql/updates/ and the {version} install script. Run by ALTER EXTENSION {extension} UPDATE.\n"
                f"\\echo Use \"ALTER EXTENSION {extension} UPDATE\" to load this file. \\quit\n\n"
                + "\n".join(chain)
                + f"\n-- ---- every function, aggregate, view and trigger of {version}, then comments and privileges\n\n"
                + latest
                + "\n"
                + "\n".join(post)
            )
        written.append(os.path.basename(out))
    print("make-update-scripts: " + (", ".join(written) if written else "no earlier release"))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
