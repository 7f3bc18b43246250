"""Sessions without server state: a cookie signed by the console, for a key that still exists,
until it expires; CSRF tokens bound to the session."""


from guardstream.callers import REVIEW_KEY_PREFIX, ApiKeys, new_key
from guardstream.console.sessions import Sessions

SECRET = b"s" * 32


def keys(*entries):
    return ApiKeys(keys=list(entries))


def test_a_session_names_its_reviewer_and_tenants_and_a_tampered_cookie_names_none():
    key, entry = new_key("ann", ["acme", "globex"], REVIEW_KEY_PREFIX)
    sessions = Sessions(SECRET, 3600)
    cookie = sessions.open(entry)
    who = sessions.read(cookie, keys(entry))
    assert (who.name, who.tenants) == ("ann", ("acme", "globex")) and key.startswith("gsr-")
    body, signature = cookie.split(".")
    for forged in (f"{body}x.{signature}", f"{body}.{signature[:-2]}AA", "", "no-dot", "a" * 600,
                   Sessions(b"t" * 32, 3600).open(entry)):  # another console's secret
        assert sessions.read(forged, keys(entry)) is None, forged


def test_a_session_ends_when_it_expires_or_its_key_is_removed_or_replaced():
    _, entry = new_key("ann", ["acme"], REVIEW_KEY_PREFIX)
    _, other = new_key("bob", ["acme"], REVIEW_KEY_PREFIX)
    _, renewed = new_key("ann", ["acme"], REVIEW_KEY_PREFIX)  # a new key under the same name
    assert Sessions(SECRET, -1).read(Sessions(SECRET, -1).open(entry), keys(entry)) is None
    cookie = Sessions(SECRET, 3600).open(entry)
    assert Sessions(SECRET, 3600).read(cookie, keys(other)) is None
    assert Sessions(SECRET, 3600).read(cookie, keys(renewed)) is None


def test_a_changed_scope_applies_to_open_sessions():
    _, entry = new_key("ann", ["acme", "globex"], REVIEW_KEY_PREFIX)
    cookie = Sessions(SECRET, 3600).open(entry)
    narrowed = entry.model_copy(update={"tenants": ["acme"]})
    assert Sessions(SECRET, 3600).read(cookie, keys(narrowed)).tenants == ("acme",)


def test_csrf_tokens_belong_to_their_session():
    _, entry = new_key("ann", ["acme"], REVIEW_KEY_PREFIX)
    sessions = Sessions(SECRET, 3600)
    first, second = (sessions.read(sessions.open(entry), keys(entry)) for _ in range(2))
    assert sessions.valid(sessions.csrf(first), sessions.csrf(first))
    assert not sessions.valid(sessions.csrf(first), sessions.csrf(second))
    assert not sessions.valid(sessions.csrf(first), None) and not sessions.valid(sessions.csrf(first), "")
    assert sessions.signin_csrf("n1") != sessions.signin_csrf("n2")
