"""Headless Chromium for the report tests: the page as the browser leaves it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "Chromium is not installed (Debian package: chromium)"


def _headless(profile: Path) -> list[str]:
    """Chromium's flags for a page loaded headless, offline, its scripts given 30 s of virtual
    time, in its own ``profile``."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=30000",
    ]


def dump_dom(page: Path, profile: Path, *flags: str) -> str:
    """Load ``page`` offline, let its scripts run (30 s of virtual time), return the DOM."""
    command = [CHROMIUM, *flags, *_headless(profile), "--dump-dom", page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120).stdout


# Appended to a copy of the page: once the charts are drawn, each chart's right edge and its
# section's, in CSS pixels, as "id right container;..." in <pre id="widths">.
_MEASURE = """<pre id="widths"></pre><script>
const measure = () => {
  if (!document.getElementById("status").textContent.startsWith("rendered")) {
    return setTimeout(measure, 200);
  }
  document.getElementById("widths").textContent = [...document.querySelectorAll("[id^=chart-]")]
    .map((el) => [el.id, el.querySelector("svg"), el.closest("section")])
    .map(([id, svg, box]) => id + " " + (svg ? svg.getBoundingClientRect().right : -1) + " " +
         box.getBoundingClientRect().right).join(";");
};
measure();
</script>"""


def chart_edges(page: Path, profile: Path, width: int = 1280) -> dict[str, tuple[float, float]]:
    """Each chart's right edge and its section's, in a window ``width`` pixels wide."""
    text = page.read_text()
    at = text.rindex("</body>")
    copy = profile.parent / ("measured-" + page.name)
    copy.write_text(text[:at] + _MEASURE + text[at:])
    dom = dump_dom(copy, profile, f"--window-size={width},900")
    found = dom.split('<pre id="widths">', 1)[1].split("</pre>", 1)[0]
    edges = {}
    for item in filter(None, found.split(";")):
        key, right, box = item.split(" ")
        edges[key] = (float(right), float(box))
    return edges


def visit(url: str, profile: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """Load ``url`` (a server's page), let its scripts run; return the DOM and what the page
    logged to its console (a script error, a failed request). With ``screenshot``, also a
    1280×900 PNG of it there."""
    flags = [*_headless(profile), "--enable-logging=stderr", "--v=0"]
    done = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    if screenshot is not None:
        subprocess.run(
            [CHROMIUM, *flags, "--window-size=1280,900", f"--screenshot={screenshot}", url],
            capture_output=True,
            timeout=120,
        )
    return done.stdout, console
