"""The Models page in Chromium, on the served healthcare demo of test_browser.py: a model of the patients' gender
trained from the form and watched until it has trained, its metrics, its predictions and one explained, and no
console error."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.ui.test_browser import SHOTS, Demo, browser, demo, page, sign_in  # noqa: F401  (the fixtures)

pytest.importorskip("torch_geometric")


def test_train_watch_predict_and_explain(page: Page, demo: Demo) -> None:  # noqa: F811
    sign_in(page, demo, then="/ui/models")
    expect(page.locator("#models-list")).to_contain_text("No models yet")
    page.get_by_label("Name").fill("gender")
    page.locator("#train-attribute").click()  # the kind is patient already
    page.get_by_role("option", name="gender", exact=True).click()
    page.get_by_label("Epochs").fill("10")
    page.get_by_role("button", name="Train", exact=True).click()
    expect(page.locator("#train-msg")).to_contain_text("Training gender, version 1")
    row = page.locator("#models-list tr", has_text="gender")
    expect(row).to_contain_text("succeeded")  # the list follows the training without a reload
    expect(row).to_contain_text("admin")

    row.get_by_role("link", name="gender").click()
    expect(page.locator("#model-metrics")).to_contain_text("Test accuracy")
    expect(page.locator("#model-about")).to_contain_text("attribute gender")
    page.get_by_role("button", name="Predict").click()
    predicted = page.locator("#predict-table tbody tr")
    expect(predicted).to_have_count(40)  # every patient of the demo
    predicted.first.get_by_role("button", name="Explain").click()
    expect(page.locator("#explain-card")).to_contain_text("Why")
    expect(page.locator("#explain-chart .js-plotly-plot")).to_be_visible()
    expect(page.locator("#explain-card li a").first).to_be_visible()  # a neighbour, linked
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "models-explained.png"), full_page=True)
