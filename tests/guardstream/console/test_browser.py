"""The review console in a real browser (Playwright driving Debian's chromium), against the
session's worker, Apache Kafka and PostgreSQL: reviewers sign in with their keys, claim items
under leases, decide with the keyboard; decisions reach the topic, the audit join and a
follow-up action; tenants stay apart, hostile text stays text, forms need their CSRF token, and
an expired lease sends the item back to the queue."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import uvicorn

from guardstream.callers import REVIEW_KEY_PREFIX, ApiKeys, new_key
from guardstream.console.app import create_console
from guardstream.console.outbox import DecisionOutbox
from guardstream.dev.broker import free_port
from guardstream.kafka_io import set_policy
from guardstream.workers.sinks.review import ReviewStore

from tests.helpers.kafka_helpers import produce, read_all
from tests.helpers.metrics import scrape

from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration
playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "img"
QUESTION = "is the government right about gun control"  # the corpus: Controversial, Politically Sensitive Topics
HOSTILE = '<script>window.pwned = 1</script>"><img src=x onerror="window.pwned = 2">'
# everything goes to review, with its text: the hostile text too, whichever label the fixture model
# (as trained on this CPU) gives it
POLICY = {"unsafe_action": "review", "category_actions": {"Politically Sensitive Topics": "review"},
          "review_thresholds": {"Unsafe": 0.000001},
          "review": {"store_text": True, "retention_days": 1}}
TENANTS = ("console-a", "console-b", "console-c")
REVIEWERS = {"ann": ["console-a", "console-c"], "bob": ["console-a", "console-c"], "cat": ["console-b"]}


def off_loop(call, *args):
    """`call(*args)` in a thread of its own: Playwright's sync API holds an event loop in this one,
    and the Kafka helpers run their own with asyncio.run."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(call, *args).result()


def open_items(pg_url: str, tenant: str) -> dict[str, dict]:
    with psycopg.connect(pg_url, row_factory=psycopg.rows.dict_row) as db:
        try:
            rows = db.execute("SELECT * FROM review_items WHERE tenant = %s", (tenant,)).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {row["item_id"]: row for row in rows}


@pytest.fixture(scope="module")
def queued(worker, pg_url):
    """Items waiting in three tenants' queues: five Controversial questions and one hostile text
    for console-a, two for console-b, one for console-c."""
    settings, bootstrap = worker.settings, worker.bootstrap
    for tenant in TENANTS:
        off_loop(asyncio.run, set_policy(settings, bootstrap, tenant, POLICY, "test"))
    time.sleep(5)  # a policy change reaches the workers within seconds (test_policy_reload measures it)
    counts = {"console-a": 5, "console-b": 2, "console-c": 1}
    events = [{"event_id": f"{tenant}-{i}", "conversation_id": f"{tenant}-{i}", "tenant": tenant,
               "messages": [{"role": "user", "content": QUESTION}]} for tenant, n in counts.items() for i in range(n)]
    events.append({"event_id": "console-a-hostile", "conversation_id": "console-a-hostile", "tenant": "console-a",
                   "messages": [{"role": "user", "content": HOSTILE}]})
    off_loop(produce, settings, bootstrap, events)
    counts["console-a"] += 1
    for tenant, n in counts.items():
        eventually(lambda: len(open_items(pg_url, tenant)) == n, 120, f"{n} review items of {tenant}")
    return counts


@pytest.fixture(scope="module")
def console(worker, pg_url):
    """The console on a port of its own, in this process, publishing to the worker's broker."""
    made = {name: new_key(name, tenants, REVIEW_KEY_PREFIX) for name, tenants in REVIEWERS.items()}
    store = ReviewStore(pg_url)
    app = create_console(store, DecisionOutbox(store, worker.settings, worker.bootstrap), ApiKeys(keys=[e for _, e in made.values()]),
                         b"test-secret" * 4, lease_s=300, secure_cookie=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started, 30, "the console to listen")
    yield f"http://127.0.0.1:{port}", {name: key for name, (key, _) in made.items()}
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no {CHROMIUM}: `make test` installs Debian's chromium package")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def signed_in(browser, console, name: str):
    url, keys = console
    page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
    page.goto(f"{url}/queue")
    assert page.url.endswith("/signin")
    page.fill("#key", keys[name])
    page.keyboard.press("Enter")
    page.wait_for_url(f"{url}/queue")
    return page


def test_two_reviewers_work_the_queue_with_the_keyboard_and_each_decision_flows_back(browser, console, queued, worker, pg_url):
    url, _ = console
    ann, bob = signed_in(browser, console, "ann"), signed_in(browser, console, "bob")
    dialogs = []
    for page in (ann, bob):
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    shots = DOCS if os.environ.get("GUARDSTREAM_DOCS_SCREENSHOTS") else Path(os.environ.get("TMPDIR", "/tmp"))
    ann.screenshot(path=str(shots / "review-queue.png"), full_page=True)
    assert ann.locator("table.queue tbody tr").count() == queued["console-a"] + queued["console-c"]

    decided: dict[str, list[str]] = {"ann": [], "bob": []}
    choice = {"ann": "u", "bob": "o"}
    corrected = None
    while True:
        held = {}
        for name, page in (("ann", ann), ("bob", bob)):  # both claim before either decides
            page.goto(f"{url}/queue?tenant=console-a")
            with page.expect_navigation():
                page.keyboard.press("n")
            if "/items/" in page.url:
                held[name] = page.url.rsplit("/", 1)[1]
        if not held:
            break
        assert len(set(held.values())) == len(held), "two reviewers hold the same item"
        for name, item_id in held.items():
            page = ann if name == "ann" else bob
            if open_items(pg_url, "console-a")[item_id]["source_event_id"] == "console-a-hostile":
                assert page.locator(".conversation pre").inner_text() == HOSTILE  # shown as text
                assert page.locator(".conversation img, .conversation script").count() == 0
                assert page.evaluate("window.pwned") is None
                page.screenshot(path=str(shots / "review-item.png"), full_page=True)
            elif name == "ann" and corrected is None:  # a category corrected on the way
                page.check("input[name=category][value='PII']")
                page.keyboard.press("Escape")  # out of the form's field: the keys are the page's again
                corrected = item_id
            page.keyboard.press(choice[name])
            page.wait_for_url(f"{url}/queue?decided={item_id}")
            decided[name].append(item_id)
    assert dialogs == []
    everyone = decided["ann"] + decided["bob"]
    assert sorted(everyone) == sorted(open_items(pg_url, "console-a")) and decided["ann"] and decided["bob"]
    assert ann.locator("table.queue tbody tr").count() == 1  # console-c's alone

    with psycopg.connect(pg_url, row_factory=psycopg.rows.dict_row) as db:  # each decision joins its verdict
        joined = {r["item_id"]: r for r in db.execute(
            "SELECT d.*, v.action, v.risk_level FROM review_decisions d JOIN guard_verdicts v USING (verdict_id) "
            "WHERE d.tenant = 'console-a'").fetchall()}
    assert set(joined) == set(everyone)
    for name, items in decided.items():
        for item_id in items:
            assert (joined[item_id]["reviewer"], joined[item_id]["decision"], joined[item_id]["action"]) == \
                (name, {"ann": "uphold", "bob": "overturn"}[name], "review")
            assert joined[item_id]["published_at"] is not None

    settings, bootstrap = worker.settings, worker.bootstrap
    published = {d["item_id"]: d for d in off_loop(read_all, settings, bootstrap, "review_decisions",
                                                     lambda d: d["tenant"] == "console-a")}
    assert set(published) == set(everyone)
    assert sorted(published[corrected]["categories"]) == ["PII", "Politically Sensitive Topics"]
    ids = {d["decision_id"] for d in published.values()}
    follow = eventually(lambda: (a := {x["decision_id"]: x for x in off_loop(
        read_all, settings, bootstrap, "actions", lambda x: x.get("decision_id") in ids)}) and len(a) == len(ids) and a,
        60, "a follow-up action for each decision")
    for item_id, event in published.items():
        action = follow[event["decision_id"]]
        assert action["verdict_id"] == joined[item_id]["verdict_id"] and f"after review by {event['reviewer']}" in action["reason"]
        flagged = joined[item_id]["risk_level"] != "Safe"
        assert action["action"] == ("block" if flagged == (event["decision"] == "uphold") else "allow")

    def decision_gauges():  # the worker's review agent sets them from the database every 10 s
        hourly = scrape(settings.metrics_port, "guardstream_review_decisions_last_hour").get((("tenant", "console-a"),))
        return hourly == len(everyone) and scrape(settings.metrics_port, "guardstream_review_overturn_ratio")

    ratios = eventually(decision_gauges, 60, "the decisions' gauges")
    assert {(("category", "Politically Sensitive Topics"),), (("category", "None"),)} <= set(ratios)
    assert all(0 <= r <= 1 for r in ratios.values()) and ratios[(("category", "Politically Sensitive Topics"),)] > 0


def test_a_reviewer_sees_and_decides_only_their_tenants_items(browser, console, queued, pg_url):
    url, _ = console
    cat = signed_in(browser, console, "cat")
    b_items, a_item = open_items(pg_url, "console-b"), next(iter(open_items(pg_url, "console-a")))
    rows = cat.locator("table.queue tbody tr")
    assert rows.count() == len(b_items) and all(rows.nth(i).get_attribute("data-item") in b_items for i in range(rows.count()))
    assert cat.goto(f"{url}/items/{a_item}").status == 404  # by URL: another tenant's item is not found
    assert cat.goto(f"{url}/queue?tenant=console-a").status == 404
    ann = signed_in(browser, console, "ann")
    csrf = ann.locator("input[name=csrf]").first.get_attribute("value")
    b_item = next(iter(b_items))
    for path, form in ((f"/items/{b_item}/claim", {}), (f"/items/{b_item}/decide", {"decision": "uphold"}),
                       (f"/items/{b_item}/release", {})):
        assert ann.request.post(f"{url}{path}", form={"csrf": csrf, **form}).status == 404, path
    assert open_items(pg_url, "console-b")[b_item]["lease_holder"] is None  # untouched


def test_a_form_without_the_sessions_csrf_token_is_refused(browser, console, queued, pg_url):
    url, _ = console
    ann = signed_in(browser, console, "ann")
    item_id = next(iter(open_items(pg_url, "console-c")))
    other = signed_in(browser, console, "bob").locator("input[name=csrf]").first.get_attribute("value")
    for form in ({}, {"csrf": "forged"}, {"csrf": other}):  # none, made up, another session's
        answer = ann.request.post(f"{url}/items/{item_id}/claim", form=form)
        assert answer.status == 403 and "CSRF" in answer.text(), form
    assert open_items(pg_url, "console-c")[item_id]["lease_holder"] is None
    assert ann.request.post(f"{url}/signin", form={"key": "x"}).status == 403  # the sign-in form's too
    headers = ann.request.get(f"{url}/queue").headers
    assert "script-src 'self'" in headers["content-security-policy"] and "unsafe-inline" not in headers["content-security-policy"]


def test_an_expired_lease_returns_the_item_to_the_queue_and_its_old_holder_cannot_decide(browser, console, queued, pg_url):
    url, _ = console
    ann, bob = signed_in(browser, console, "ann"), signed_in(browser, console, "bob")
    ann.goto(f"{url}/queue?tenant=console-c")
    ann.keyboard.press("n")
    ann.wait_for_url(f"{url}/items/*")
    item_id = ann.url.rsplit("/", 1)[1]
    bob.goto(f"{url}/queue?tenant=console-c")
    assert "another reviewer" in bob.locator(f"tr[data-item='{item_id}']").inner_text()
    bob.keyboard.press("n")
    bob.wait_for_url(f"{url}/queue?empty=true&tenant=console-c")  # the only item is held
    with psycopg.connect(pg_url, autocommit=True) as db:  # five minutes pass
        db.execute("UPDATE review_items SET lease_until = now() - interval '1 second' WHERE item_id = %s", (item_id,))
    bob.goto(f"{url}/queue?tenant=console-c")
    assert "another reviewer" not in bob.locator(f"tr[data-item='{item_id}']").inner_text()
    bob.keyboard.press("n")
    bob.wait_for_url(f"{url}/items/{item_id}")
    with ann.expect_navigation():
        ann.keyboard.press("u")  # ann's page still shows her form; her lease is gone
    assert "Your lease on this item ended" in ann.locator("h1").inner_text()
    bob.keyboard.press("o")
    bob.wait_for_url(f"{url}/queue?decided={item_id}")
    row = open_items(pg_url, "console-c")[item_id]
    assert row["decided_at"] is not None and row["lease_holder"] == "bob"
