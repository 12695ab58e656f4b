"""The report page in a real browser (headless Chromium driven by Playwright): every top-k head is in the circuit
graph and the scatter plot with a hover title, labels never overprint, nothing is wider than the page, and the
console stays clean. Screenshots are kept in ``test-artifacts/`` (or ``$CIRCUITS_TEST_ARTIFACTS``).

Chromium comes from Debian's packages (``apt-get install -y chromium``; ``.ci/run`` installs it). The tests skip,
saying why, only where no browser can be found and ``CIRCUITS_REQUIRE_BROWSER`` is unset; CI sets it.
"""

import os
import shutil
from pathlib import Path

import pytest

from circuits.report.experiment import CircuitReport, report

ROOT = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1280, "height": 900}


def _browser_path() -> str | None:
    candidates = [os.environ.get("CIRCUITS_CHROMIUM")] + [shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")]
    return next((path for path in candidates if path and Path(path).exists()), None)


@pytest.fixture(scope="module")
def browser():
    path = _browser_path()
    if path is None:
        if os.environ.get("CIRCUITS_REQUIRE_BROWSER"):
            pytest.fail("no Chromium found, and CIRCUITS_REQUIRE_BROWSER is set: install it (apt-get install -y chromium) "
                        "or point CIRCUITS_CHROMIUM at one")
        pytest.skip("no Chromium found (apt-get install -y chromium, or set CIRCUITS_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


def _artifacts() -> Path:
    directory = Path(os.environ.get("CIRCUITS_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def page_problems(browser, html_file: Path, result: CircuitReport, screenshot: str) -> list[str]:
    """Everything wrong with the rendered page of ``result``, as sentences (empty when it is right); keeps a
    full-page screenshot."""
    page = browser.new_page(viewport=VIEWPORT)
    console = []
    page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: console.append(str(error)))
    page.goto(html_file.as_uri())
    page.screenshot(path=str(_artifacts() / screenshot), full_page=True)
    problems = [f"console error: {text}" for text in console]

    def titled(selector: str) -> bool:
        return bool(page.evaluate("(s) => { const e = document.querySelector(s); return !!e && !!e.querySelector('title') "
                                  "&& e.querySelector('title').textContent.length > 0; }", selector))

    top = [f"L{layer}H{head}" for layer, head, _ in result.top_predicted()]
    for label in top:
        if not titled(f'#circuit-graph g.node.target[data-head="{label}"]'):
            problems.append(f"{label} (top predicted) is missing from the circuit graph or has no hover title")
        layer, head = map(int, label[1:].split("H"))
        source = "L{}H{}".format(*result.source_of(layer, head))
        if result.source_of(layer, head)[0] >= 0:
            if not titled(f'#circuit-graph g.node.source[data-head="{source}"]'):
                problems.append(f"{source}, the source of {label}, is missing from the circuit graph")
            if not page.query_selector(f'#circuit-graph line.edge[data-source="{source}"][data-target="{label}"]'):
                problems.append(f"the edge {source} -> {label} is missing from the circuit graph")
    edges = page.eval_on_selector_all("#circuit-graph line.edge", "es => es.map(e => [e.dataset.source, e.dataset.target])")
    maximising = {(f"L{sl}H{sh}", f"L{l}H{h}") for l, h, _ in result.top_predicted() for sl, sh in [result.source_of(l, h)] if sl >= 0}
    problems += [f"the graph draws {s} -> {t}, which is not the maximising edge of a top head" for s, t in edges if (s, t) not in maximising]
    if result.validation is not None:
        measured = [f"L{layer}H{head}" for layer, head, _ in result.validation.measured_top(result.k)]
        for label in dict.fromkeys(top + measured):
            if not titled(f'#scatter circle[data-head="{label}"]'):
                problems.append(f"{label} is missing from the scatter plot or has no hover title")
            if not page.query_selector(f'#scatter text.label[data-head="{label}"]'):
                problems.append(f"{label} has no label in the scatter plot")
        boxes = page.eval_on_selector_all("#scatter text.label", "es => es.map(e => { const r = e.getBoundingClientRect(); "
                                          "return [e.textContent, r.left, r.top, r.right, r.bottom]; })")
        for i, (name_a, *a) in enumerate(boxes):
            for name_b, *b in boxes[i + 1:]:
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    problems.append(f"the scatter labels {name_a} and {name_b} overprint")
    too_wide = page.evaluate("() => { const w = document.documentElement.clientWidth; return [...document.body.querySelectorAll('*')]"
                             ".filter(e => e.getBoundingClientRect().right > w + 0.5).map(e => e.tagName + (e.id ? '#' + e.id : ''))"
                             ".slice(0, 5); }")
    problems += [f"{element} is wider than the page" for element in too_wide]
    page.close()
    return problems


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory):
    result = report("demo-induction", show_progress=False)
    directory = result.write(tmp_path_factory.mktemp("demo") / "report")
    return result, directory / "report.html"


def test_the_demo_report_reads_right_in_a_browser(browser, demo_page):
    result, html_file = demo_page
    assert page_problems(browser, html_file, result, "report-demo.png") == []


def test_the_browser_check_fails_when_a_top_head_is_missing(browser, demo_page, tmp_path):
    result, html_file = demo_page
    page = html_file.read_text()
    tampered = tmp_path / "report.html"
    tampered.write_text(page.replace('data-head="L1H0"', 'data-head="gone"'))
    problems = page_problems(browser, tampered, result, "report-demo-tampered.png")
    assert any("L1H0 (top predicted) is missing from the circuit graph" in p for p in problems)
    assert any("L1H0 is missing from the scatter plot" in p for p in problems)


@pytest.mark.network
def test_the_smollm2_report_reads_right_in_a_browser(browser, smollm2_report):
    result = CircuitReport.from_json((smollm2_report / "report.json").read_text())
    assert page_problems(browser, smollm2_report / "report.html", result, "report-smollm2.png") == []
