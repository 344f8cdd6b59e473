"""The console in a real browser: sign-in, runs, filters, live updates, transcripts, charts
and the playground, against the API and MCP server over real HTTP (SQLite, offline model)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from backend.clock import clock as the_clock
from tests.conftest import user_token
from tests.console.browser import (
    VIEWPORT,
    PageWatch,
    Servers,
    api_without_tools,
    chat,
    launch_chromium,
    require_chromium,
    running_servers,
)

HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
OPERATOR = user_token("ops", role="admin", ttl=3600)
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"


@dataclass
class Seeded:
    milk_conversation: int
    hostile_conversation: int
    bob_conversation: int


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with running_servers(tmp_path_factory.mktemp("console")) as running:
        yield running


# Earlier turns of the day (hours ago, user, message, through the replica without tools),
# so the charts have hours to show; none is alice's, bob's or about milk.
HISTORY = [
    (20, "maria", "add book the dentist", False),
    (16, "li", "add renew my passport", False),
    (11, "sam", "show my tasks", False),
    (7, "maria", "add pay the rent on friday", False),
    (4, "li", "add buy stamps", True),
    (2, "sam", "add call the plumber", False),
]


@pytest.fixture(scope="module")
def seeded(servers: Servers) -> Seeded:
    """Real turns: a day's history, then alice's two (one adds a task whose title is markup),
    bob's, and carol's, which fails because its replica cannot reach the task tools."""
    with api_without_tools(servers) as broken:
        now = the_clock.now()
        try:
            for hours_ago, user, message, fails in HISTORY:
                the_clock.start_at(now - timedelta(hours=hours_ago))
                chat(broken if fails else servers.base_url, user, message)
        finally:
            the_clock.reset()
        milk = chat(servers.base_url, "alice", "add buy milk")
        hostile = chat(servers.base_url, "alice", f'add "{HOSTILE_TITLE}"')
        bob = chat(servers.base_url, "bob", "add call mom")
        failed = chat(broken, "carol", "add fix the bike")
    assert hostile["tool_calls"][0]["arguments"]["title"] == HOSTILE_TITLE, hostile
    assert failed["code"] == "tools_unavailable", failed
    return Seeded(milk["conversation_id"], hostile["conversation_id"], bob["conversation_id"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_chromium()
    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        try:
            yield launched
        finally:
            launched.close()


class Console:
    """The console page in a fresh browser context, watched for errors and dialogs."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.watch = PageWatch()
        self.watch.attach(page)

    def by(self, test_id: str) -> Locator:
        return self.page.get_by_test_id(test_id)

    def sign_in(self, token: str, *, hash: str = "") -> None:
        self.page.goto(f"{self.base_url}/console{hash}")
        self.by("signin-token").fill(token)
        self.by("signin-submit").click()
        expect(self.by("whoami")).not_to_be_empty()

    def go(self, hash: str) -> None:
        self.page.goto(f"{self.base_url}/console{hash}")

    def rows(self) -> Locator:
        return self.by("run-row")

    def row_of(self, text: str) -> Locator:
        return self.rows().filter(has_text=text)

    def filter_runs(self, **values: str) -> None:
        for name, value in values.items():
            field = self.by(f"filter-{name}")
            if name in ("status", "channel"):
                field.select_option(value)
            else:
                field.fill(value)
        self.by("filter-apply").click()

    def expect_live(self) -> None:
        expect(self.by("live-status")).to_have_attribute("data-state", "on")


@pytest.fixture
def console(browser: Browser, servers: Servers, seeded: Seeded) -> Iterator[Console]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    page = context.new_page()
    watched = Console(page, servers.base_url)
    try:
        yield watched
    finally:
        context.close()
    # After the test's own assertions: a JS error, CSP violation or dialog fails it too.
    watched.watch.assert_clean()


def user_ids_in(console: Console) -> set[str]:
    return set(console.rows().locator("td.user").all_inner_texts())


def test_an_operator_signs_in_sees_every_users_runs_and_signs_out(console: Console) -> None:
    console.sign_in(OPERATOR)

    expect(console.by("whoami")).to_have_text("ops · operator")
    expect(console.row_of("add fix the bike")).to_have_count(1)
    assert {"alice", "bob", "carol"} <= user_ids_in(console)
    failed = console.row_of("add fix the bike")
    expect(failed).to_have_attribute("data-status", "failed")
    expect(failed).to_contain_text("tools_unavailable")
    # newest first
    ids = [int(i) for i in console.rows().evaluate_all("rows => rows.map(r => r.dataset.runId)")]
    assert ids == sorted(ids, reverse=True)
    assert OPERATOR not in console.page.url

    console.by("signout").click()
    expect(console.by("signin-token")).to_be_visible()
    assert console.page.evaluate("sessionStorage.length") == 0


def test_a_rejected_token_shows_the_error_and_stays_signed_out(console: Console) -> None:
    console.go("")
    console.by("signin-token").fill("not-a-token")
    console.by("signin-submit").click()

    expect(console.by("error")).to_contain_text("401")
    expect(console.by("signin-token")).to_be_visible()
    expect(console.by("whoami")).to_be_hidden()


def test_filters_narrow_the_runs(console: Console, seeded: Seeded) -> None:
    console.sign_in(OPERATOR)
    expect(console.row_of("add fix the bike")).to_have_count(1)

    console.filter_runs(user="bob")
    expect(console.rows()).to_have_count(1)
    expect(console.rows()).to_contain_text("add call mom")

    console.filter_runs(user="", status="failed")
    expect(console.row_of("add call mom")).to_have_count(0)
    expect(console.row_of("add fix the bike")).to_have_count(1)
    assert set(console.rows().evaluate_all("rs => rs.map(r => r.dataset.status)")) == {"failed"}

    console.filter_runs(status="", q="MILK")
    expect(console.row_of("add fix the bike")).to_have_count(0)
    expect(console.row_of("add buy milk")).to_have_count(1)
    assert all("milk" in text.lower() for text in console.rows().all_inner_texts())


def test_a_run_opens_its_transcript_with_tool_calls(console: Console) -> None:
    console.sign_in(OPERATOR)
    console.row_of("add buy milk").click()

    transcript = console.by("transcript")
    expect(transcript.get_by_test_id("transcript-title")).not_to_be_empty()
    expect(transcript).to_contain_text("alice")
    call = transcript.get_by_test_id("tool-call").first
    expect(call.get_by_test_id("tool-name")).to_have_text("add_task")
    expect(call.get_by_test_id("tool-arguments")).to_contain_text('"title": "Buy milk"')
    expect(call.get_by_test_id("tool-duration")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(transcript.get_by_test_id("transcript-runs")).to_contain_text("succeeded")

    with console.page.expect_download() as download:
        transcript.get_by_test_id("export-md").click()
    saved = download.value
    assert saved.suggested_filename.endswith(".md")
    assert "Buy milk" in Path(saved.path()).read_text()
    assert saved.url.startswith("blob:")


def test_a_new_turn_appears_live(console: Console, servers: Servers) -> None:
    console.sign_in(OPERATOR)
    expect(console.row_of("add buy milk")).to_have_count(1)
    console.expect_live()
    expect(console.rows().filter(has_text="dave")).to_have_count(0)

    chat(servers.base_url, "dave", "add feed the cat")

    row = console.row_of("add feed the cat")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(console.rows().first).to_contain_text("add feed the cat")


def test_a_hostile_title_is_only_text(console: Console, seeded: Seeded) -> None:
    console.sign_in(OPERATOR, hash=f"#transcript/{seeded.hostile_conversation}")

    transcript = console.by("transcript")
    expect(transcript.get_by_test_id("message").first).to_contain_text(HOSTILE_TITLE)
    expect(transcript.get_by_test_id("tool-arguments").first).to_contain_text(HOSTILE_TITLE)

    console.go("#playground")
    console.by("playground-user").fill("alice")
    console.by("playground-user").press("Enter")
    tasks = console.by("playground-tasks")
    expect(tasks.get_by_test_id("playground-task").filter(has_text=HOSTILE_TITLE)).to_have_count(1)

    expect(console.page.locator("img")).to_have_count(0)
    assert not console.watch.dialogs


def test_a_plain_user_sees_only_their_own(
    console: Console, servers: Servers, seeded: Seeded
) -> None:
    console.sign_in(user_token("alice"))

    expect(console.by("whoami")).to_have_text("alice")
    expect(console.row_of("add buy milk")).to_have_count(1)
    assert user_ids_in(console) == {"alice"}

    console.go(f"#transcript/{seeded.bob_conversation}")
    expect(console.by("transcript-error")).to_contain_text("404")
    expect(console.by("error")).to_contain_text("conversation_not_found")
    expect(console.by("transcript")).not_to_contain_text("add call mom")

    with servers.client(user_token("alice")) as api:
        assert api.get(f"/console/api/conversations/{seeded.bob_conversation}").status_code == 404
        assert api.get("/console/api/runs", params={"user": "bob"}).status_code == 403

    console.go("#playground")
    expect(console.by("playground-user")).to_have_value("alice")
    expect(console.by("playground-user")).not_to_be_editable()


def test_an_operator_chats_as_a_user_in_the_playground(console: Console) -> None:
    console.sign_in(OPERATOR, hash="#playground")
    console.by("playground-user").fill("erin")
    console.by("playground-input").fill("add water the plants")
    console.by("playground-send").click()

    call = console.by("playground-tool-call")
    expect(call).to_have_count(1)
    expect(call).to_contain_text("add_task")
    expect(call.get_by_test_id("tool-state")).to_have_text("done")
    expect(console.by("playground-reply").last).to_contain_text("Water the plants")
    tasks = console.by("playground-tasks").get_by_test_id("playground-task")
    expect(tasks.filter(has_text="Water the plants")).to_have_count(1)
    expect(console.by("playground-conversation")).to_have_text(re.compile(r"Conversation #\d+"))

    console.go("#runs")
    erin = console.rows().filter(has_text="erin")
    expect(erin).to_have_count(1)
    expect(erin).to_contain_text("chat")  # the user's turn, through the chat pipeline


def test_charts_render_and_the_runs_view_is_screenshotted(console: Console, tmp_path: Path) -> None:
    console.sign_in(OPERATOR)
    expect(console.row_of("add fix the bike")).to_have_count(1)
    console.expect_live()

    runs_chart = console.by("chart-runs")
    expect(runs_chart.locator("svg")).to_have_count(1)
    expect(runs_chart.locator("rect.status-succeeded[data-testid=chart-bar]")).not_to_have_count(0)
    expect(runs_chart.locator("rect.status-failed[data-testid=chart-bar]")).not_to_have_count(0)
    expect(runs_chart.locator("text.legend")).to_have_count(4)
    expect(console.by("chart-latency").locator("circle.p95")).not_to_have_count(0)
    failures = console.by("chart-failures")
    expect(failures.locator("rect[data-testid=chart-bar]")).to_have_count(1)
    expect(failures).to_contain_text("tools_unavailable")

    update_docs = os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1"
    target = DOCS_SCREENSHOT if update_docs else tmp_path / "console.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    console.page.mouse.move(0, 0)
    console.page.screenshot(path=str(target))
    assert 10_000 < target.stat().st_size < 300_000


def test_the_api_answers_with_the_console_headers(servers: Servers) -> None:
    with httpx.Client(base_url=servers.base_url) as client:
        page = client.get("/console")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-frame-options"] == "DENY"
