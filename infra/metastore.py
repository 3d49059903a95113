"""The Hive metastore's schema on the stack's PostgreSQL: created once, before any Spark driver starts.

Spark's built-in Hive client (Hive 2.3.10, inside the pyspark wheel) keeps the metastore through
DataNucleus. Its drivers run with schema verification on and schema creation off
(jobs.io.spark.session_conf), so several of them can share the database and none alters it. The
schema is made here by DataNucleus's SchemaTool from the metadata the Hive client itself persists
(package.jdo of hive-metastore), and its version row written, as Hive's schematool would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pyspark

from jobs.io.spark import HIVE_SCHEMA_VERSION

JARS = Path(pyspark.__file__).parent / "jars"


class MetastoreError(Exception):
    pass


def schema_versions(connection) -> list[str] | None:
    """The versions the VERSION table records, or None when the database holds no Hive schema."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('public.\"VERSION\"') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return None
        cursor.execute('SELECT "SCHEMA_VERSION" FROM "VERSION"')
        return [r[0] for r in cursor.fetchall()]


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found:
        raise MetastoreError("java was not found (set JAVA_HOME): the metastore schema is created with it")
    return found


def ensure_schema(connection, jdbc_url: str, user: str, password: str, jars_dir: Path, work: Path,
                  log: Path) -> str:
    """Create the schema when the database has none; refuse one of another version. Returns what it did."""
    versions = schema_versions(connection)
    if versions == [HIVE_SCHEMA_VERSION]:
        return "present"
    if versions is not None:
        raise MetastoreError(f"the metastore database holds Hive schema version {', '.join(versions) or 'none'}; "
                             f"this Spark's Hive client needs {HIVE_SCHEMA_VERSION}: use another database "
                             "(BATCHLOOP_METASTORE_DB) or drop this one")
    driver = sorted(jars_dir.glob("postgresql-*.jar"))
    if not driver:
        raise MetastoreError(f"PostgreSQL's JDBC driver is missing from {jars_dir}: run `make install` (infra/jars.sh)")
    work.mkdir(parents=True, exist_ok=True)
    (metastore_jar,) = JARS.glob("hive-metastore-*.jar")
    with zipfile.ZipFile(metastore_jar) as jar:
        (work / "package.jdo").write_bytes(jar.read("package.jdo"))
    props = work / "schematool.properties"
    props.touch(mode=0o600)
    props.chmod(0o600)
    settings = {
        "javax.jdo.option.ConnectionURL": jdbc_url,
        "javax.jdo.option.ConnectionDriverName": "org.postgresql.Driver",
        "javax.jdo.option.ConnectionUserName": user,
        "javax.jdo.option.ConnectionPassword": password,
        "javax.jdo.PersistenceManagerFactoryClass": "org.datanucleus.api.jdo.JDOPersistenceManagerFactory",
        # as the Hive client names its tables and columns, and generates ids
        "datanucleus.identifierFactory": "datanucleus1",
        "datanucleus.rdbms.useLegacyNativeValueStrategy": "true",
        "datanucleus.schema.autoCreateAll": "true",
    }
    props.write_text("".join(f"{k}={v.replace(chr(92), chr(92) * 2)}\n" for k, v in settings.items()))
    try:
        with log.open("ab") as out:
            done = subprocess.run([java(), "-cp", f"{JARS}/*:{driver[-1]}:{work}",
                                   "org.datanucleus.store.schema.SchemaTool", "-create", "-api", "JDO",
                                   "-props", str(props), str(work / "package.jdo")],
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=300)
    finally:
        props.unlink(missing_ok=True)
    if done.returncode != 0:
        raise MetastoreError(f"creating the metastore schema failed; see {log}")
    with connection.cursor() as cursor:
        cursor.execute('INSERT INTO "VERSION" ("VER_ID", "SCHEMA_VERSION", "VERSION_COMMENT") VALUES (1, %s, %s)',
                       (HIVE_SCHEMA_VERSION, "Hive release version " + HIVE_SCHEMA_VERSION))
    connection.commit()
    return "created"
