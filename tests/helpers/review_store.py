"""A review store on tables of its own: each test's own PostgreSQL schema, so tests never see each
other's items."""

from __future__ import annotations

import uuid

import psycopg

from guardstream.workers.sinks.review import ReviewStore


def fresh_store(pg_url: str) -> ReviewStore:
    schema = f"review_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    return ReviewStore(f"{pg_url}?options=-csearch_path%3D{schema}")
