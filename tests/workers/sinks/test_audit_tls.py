"""A private CA for the audit database: given one, the connection must verify the server (sslmode
verify-full), so a server that offers no TLS is refused instead of used in clear."""

import asyncio

import psycopg
import pytest

from guardstream.dev.kafka import make_tls
from guardstream.workers.sinks.audit import PostgresAudit, open_audit_store

from tests.helpers.pipeline import PG_ADMIN_URL

pytestmark = pytest.mark.integration


def connect(store: PostgresAudit) -> str:
    async def go() -> str:
        await store.open()
        await store.close()
        return "connected"

    try:
        return asyncio.run(go())
    except psycopg.OperationalError as exc:
        return str(exc)


def test_a_ca_file_makes_the_audit_connection_verify_the_server(tmp_path):
    ca, _ = make_tls(tmp_path)  # a CA that signed nothing the local PostgreSQL presents
    assert connect(PostgresAudit(PG_ADMIN_URL)) == "connected"
    refused = connect(open_audit_store(PG_ADMIN_URL, ca))
    # refused either way, never used in clear: a server without TLS, or one whose certificate this CA did not sign
    # (Debian's PostgreSQL offers TLS with its own snake-oil certificate)
    assert ("server does not support SSL, but SSL was required" in refused
            or "certificate verify failed" in refused), refused
    store = PostgresAudit(PG_ADMIN_URL + "?sslmode=verify-ca", ca)
    assert store.tls == {"sslrootcert": str(ca), "sslmode": "verify-ca"}  # the URL's own sslmode stays
