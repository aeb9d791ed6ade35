"""The Ask page in Chromium, on the served healthcare demo of test_browser.py: a question typed and answered, the
answer's chart drawn, a shared name asked back, and no console error."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.ui.test_browser import SHOTS, Demo, browser, demo, page, sign_in  # noqa: F401  (the fixtures)


def ask(on: Page, question: str) -> None:
    box = on.get_by_label("Question")
    box.fill(question)
    box.press("Enter")


def test_a_question_is_answered_with_a_chart_and_the_query(page: Page, demo: Demo) -> None:  # noqa: F811
    sign_in(page, demo, then="/ui/ask")
    ask(page, "how many patients are there?")
    expect(page.locator("#ask-answer")).to_have_text("There are 40 patients.")
    ask(page, "average heart rate of female patients over the last 7 days")
    expect(page.locator("#ask-answer")).to_contain_text("The average heart rate of patients with gender F")
    expect(page.locator("#ask-chart .js-plotly-plot")).to_be_visible()
    expect(page.locator("#ask-query")).to_contain_text('"intent": "aggregate"')
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "ask-chart.png"), full_page=True)  # docs/images/ui-ask.png is one
    ask(page, "jane doe temp on day 2")
    expect(page.locator("#ask-answer")).to_contain_text("2 patients match 'jane doe': which one?")
    expect(page.locator("#ask-out a", has_text="Jane Doe")).to_have_count(2)
    expect(page.locator("#ask-out li", has_text="MRN-100001, birth_date")).to_have_count(1)
