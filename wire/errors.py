"""The broker's errors, said plainly: an ACL refusal named with its resource, any error in one line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka.errors import ClusterAuthorizationFailedError, GroupAuthorizationFailedError, TopicAuthorizationFailedError

# The broker's ACLs refused this principal: a deployment's mistake, not the record's. Held and
# retried like a transient failure (never dead-lettered, never acked), and said plainly.
REFUSED_BY_ACLS = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError)


class NotAuthorized(RuntimeError):
    """An operation the broker's ACLs refuse to this principal, named with its resource."""

    def __init__(self, operation: str, resource: str):
        super().__init__(f"not authorized: the broker's ACLs refuse {operation} on {resource} to this principal "
                         f"(`guardstream acls` lists what each role needs)")


@contextmanager
def authorized(operation: str, resource: str) -> Iterator[None]:
    """Turn the broker's authorization refusals inside into `NotAuthorized(operation, resource)`."""
    try:
        yield
    except REFUSED_BY_ACLS as exc:
        raise NotAuthorized(operation, resource) from exc


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    named = f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
    return f"not authorized by the broker's ACLs ({named})" if isinstance(exc, REFUSED_BY_ACLS) else named
