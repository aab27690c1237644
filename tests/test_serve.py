"""``actwh serve``: every page of a warehouse made to attack its reader (tests/hostile.py) renders,
shows the hostile names and tokens as text, says 404 naming what is not there, and never writes;
and the command serves a real socket on 127.0.0.1."""

from __future__ import annotations

import hashlib
import html
import io
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import quote

import polars as pl
import pytest
from browser import CHROMIUM, NO_CHROMIUM, visit
from cli_helpers import cli
from hostile import CLOSE_SCRIPT, IMG, QUOTE, TAGS, Elements, hostile_warehouse
from starlette.testclient import TestClient

from actwh.serve import make_app

PAGE_TAGS = TAGS | {"header", "h1", "form", "textarea", "button", "select", "option", "label"}
PAGE_TAGS |= {"input", "pre"}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    return hostile_warehouse(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def client(warehouse):
    return TestClient(make_app(warehouse))


def _tracked(client) -> tuple[int, int]:
    found = client.get("/sql.csv", params={"q": "select layer, neuron from neuron_acts limit 1"})
    layer, neuron = found.text.splitlines()[1].split(",")
    return int(layer), int(neuron)


def pages(client) -> dict[str, str]:
    """Every kind of page, by its URL."""
    layer, neuron = _tracked(client)
    return {
        "/": "Models",
        f"/neuron/model/{layer}/{neuron}": "base → tuned: m̄",  # the pair's change, per run
        f"/neuron/model/{layer}/0?direction={quote(IMG)}": "Cosine with each direction",
        "/prompt/base/1": "Prompt 1 of base",
        f"/prompt/base/1?neuron={layer}:{neuron}": f"base: m of L{layer} #{neuron}",
        "/prompt/tuned/4": "Prompt 4 of tuned",
        "/prompt/base/2?layer=0": "top 3 next tokens (probability)",  # the logit lens
        "/prompt/tuned/2?layer=0": "; lens L0 resid_",  # and on hover over its token
        f"/direction/{quote(IMG, safe='')}": "Nearest value vectors to direction",
        f"/search?neuron={layer}:{neuron}&model=model": "Nearest value vectors to value vector",
        "/search?vector=" + ",".join(["0.5"] * 32): "the pasted vector (32 numbers)",
        "/sql?q=" + quote("select name, prompt_set from runs"): "CSV",
        "/query/activation_drop": "base_run",
        "/query/activation_drop?base_run=base&tuned_run=tuned&direction=" + quote(IMG): "rows",
        "/query/tracked_write?base_run=base&tuned_run=tuned&direction=" + quote(IMG): "rows",
    }


def test_every_page_renders(client):
    for url, shows in pages(client).items():
        page = client.get(url)
        assert page.status_code == 200, (url, page.text[-400:])
        assert shows in page.text, url


@pytest.mark.parametrize(
    "url, status, says",
    [
        ("/neuron/nope/0/0", 404, "no such model"),
        ("/neuron/model/99/0", 404, "layer 99 of model: it has layers 0-2"),
        ("/neuron/model/0/100000", 404, "neuron 100000 of model: its layers have neurons 0-127"),
        ("/neuron/model/0/0?base_run=nope", 404, "no such run"),
        ("/prompt/nope/0", 404, "no such run"),
        ("/prompt/base/77", 404, "prompt 77 of run base: it holds 5 prompts"),
        ("/direction/nope", 404, "no such direction"),
        ("/query/nope", 404, "no such query"),
        ("/query/activation_drop?base_run=nope&tuned_run=tuned", 404, "no such run"),
        ("/no/such/page", 404, "no page /no/such/page"),
        ("/sql?q=select+*+from+nope", 400, "nope"),
        ("/sql?q=" + quote("select * from read_csv('/etc/passwd')"), 400, "passwd"),
        ("/prompt/base/1?layer=x", 400, "layer 'x': expected a whole number"),
    ],
)
def test_what_is_not_there_is_a_page_naming_it(client, url, status, says):
    """A mistyped name, an out-of-range layer or neuron: a page that names it, never a 500."""
    page = client.get(url)
    shown = html.unescape(page.text)
    assert page.status_code == status and says in shown, (url, shown[-500:])
    assert "Traceback" not in page.text


def test_what_a_server_keeps_does_not_grow_with_names_that_are_not_there(warehouse):
    """The snapshot keeps catalog answers for the server (``Snapshot.once``); a name that is not
    in the catalog adds nothing to it, however many are asked for."""
    import actwh
    from actwh.errors import ActwhError
    from actwh.serve import pages as served

    with actwh.open(warehouse) as wh:
        served.home(wh)
        served.neuron(wh, "model", 0, 0)
        served.prompt(wh, "base", 1)
        kept = len(wh.snapshot._kept)
        for name in (f"nope{i}" for i in range(20)):
            for page, args, named in (
                (served.neuron, (name, 0, 0), {}),
                (served.prompt, (name, 1), {}),
                (served.neuron, ("model", 0, 0), {"direction": name}),
                (served.search, (), {"vector": "0.5 0.5", "model": name}),
            ):
                with pytest.raises(ActwhError):
                    page(wh, *args, **named)
        assert len(wh.snapshot._kept) == kept


def test_hostile_names_and_tokens_are_inert_in_every_page(client):
    """Names, prompt texts and tokens carry markup: every page shows them as text — no element,
    attribute or script the server did not write."""
    seen = ""
    for url in [*pages(client), "/sql?q=" + quote("select prompt_text from generations")]:
        page = client.get(url).text
        parsed = Elements()
        parsed.feed(page)
        assert set(parsed.tags) <= PAGE_TAGS, (url, set(parsed.tags) - PAGE_TAGS)
        assert not [n for n, _ in parsed.attributes if n.startswith("on")], url
        scripts = [v for n, v in parsed.attributes if n == "src"]
        assert scripts in ([], ["/static/vega.js"]), url
        assert page.count("<script") == page.count("</script>") <= 3, url
        assert "pwned" not in page.replace("'p'+'wned'", ""), url
        seen += "".join(parsed.text)
    assert IMG in seen and CLOSE_SCRIPT in seen and QUOTE.strip() in seen


def test_links_lead_to_pages(client):
    """Every link of a page answers (no dead end), walked one level from home."""
    home = client.get("/").text
    links = set(re.findall(r'href="(/[^"]*)"', home))
    assert any(link.startswith("/neuron/") for link in links)
    for link in links:
        target = link.replace("&amp;", "&")
        assert client.get(target).status_code in (200, 404), target
    layer, neuron = _tracked(client)
    page = client.get(f"/neuron/model/{layer}/{neuron}").text
    for link in set(re.findall(r'href="(/neuron/[^"]*)"', page)):
        assert client.get(link).status_code == 200, link


@pytest.fixture(scope="module")
def three_runs(warehouse, tmp_path_factory):
    """The hostile warehouse with a third run (of the base model), which no page of the pair
    needs to read."""
    wh = tmp_path_factory.mktemp("three") / "wh"
    shutil.copytree(warehouse, wh)
    here = warehouse.parent
    cli(
        "ingest",
        wh,
        "--model",
        here / "model",
        "--prompts",
        here / "prompts.jsonl",
        "--name",
        "other",
        "--generate",
        3,
        "--capture",
        "resid_mid",
        "--logit-lens",
        3,
        "--no-progress",
    )
    return wh


def test_a_page_reads_only_the_partitions_it_shows(three_runs, monkeypatch):
    """A prompt page of the pair reads no file of another run and no layer but its own and
    its tracked neuron's; a neuron page reads only its layer's files (the catalog chooses
    them: a filter DuckDB cannot push down would scan every file), its value vector once."""
    from actwh.warehouse.pruning import CommittedFiles

    chosen: list[tuple[str, dict]] = []
    choose = CommittedFiles.choose

    def spy(self, filter=None):  # noqa: A002 - pyarrow's keyword
        found = choose(self, filter)
        chosen.extend((self.spec.name, p.values) for p in found)
        return found

    monkeypatch.setattr(CommittedFiles, "choose", spy)
    client = TestClient(make_app(three_runs))
    layer, neuron = _tracked(client)
    chosen.clear()
    assert client.get(f"/prompt/tuned/1?layer=0&neuron={layer}:{neuron}").status_code == 200
    assert chosen, "the page read no fact table"
    for table, values in chosen:
        assert values.get("run") in (None, "base", "tuned"), (table, values)
        assert values.get("layer") in (None, 0, layer), (table, values)
    chosen.clear()
    assert client.get(f"/neuron/model/{layer}/{neuron}").status_code == 200
    assert {t for t, _ in chosen} >= {"value_vectors", "neuron_stats"}
    for table, values in chosen:
        assert values.get("layer") in (None, layer), (table, values)
    # its value vector is read once (its tokens, cosines and write come from that one read)
    assert [t for t, _ in chosen].count("value_vectors") == 1, chosen


def test_results_download_as_csv_and_parquet(client):
    query = "select name, mode from runs order by name"
    csv = pl.read_csv(io.BytesIO(client.get("/sql.csv", params={"q": query}).content))
    parquet = pl.read_parquet(io.BytesIO(client.get("/sql.parquet", params={"q": query}).content))
    assert csv.equals(parquet) and csv["name"].to_list() == ["base", "tuned"]


def test_the_server_never_writes(client, warehouse):
    """Only GET is answered; walking every page leaves every file of the warehouse as it was."""

    def digest() -> str:
        files = sorted(p for p in warehouse.rglob("*") if p.is_file())
        return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    before = digest()
    for url in pages(client):
        client.get(url)
    for method in ("post", "put", "delete", "patch"):
        assert getattr(client, method)("/sql?q=select+1").status_code == 405
    assert digest() == before


@pytest.mark.parametrize("workers", [1, 2])
def test_actwh_serve_answers_on_localhost(warehouse, workers):
    """The command as a user runs it: it binds 127.0.0.1 by default and answers the home page;
    with ``--workers 2``, from two processes of its own."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-c", "from actwh.cli import main; main()", "serve", str(warehouse)]
    command += ["--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    assert answer.status == 200 and "Models" in answer.read().decode()
                break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("the server did not answer: " + server.stderr.read())
        for _ in range(4):  # each worker builds a neuron page (FAISS, the readout)
            url = f"http://127.0.0.1:{port}/neuron/model/0/1"
            with urllib.request.urlopen(url, timeout=30) as answer:
                assert answer.status == 200
        if workers > 1:
            children = open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()
            assert len(children) >= workers, children
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert f"at http://127.0.0.1:{port}/" in server.stderr.read()


@pytest.fixture(scope="module")
def served(warehouse):
    """The application on a real socket (uvicorn, in a thread), for the browser."""
    import threading

    import uvicorn

    config = uvicorn.Config(make_app(warehouse), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_a_browser_walks_the_warehouse(served, tmp_path_factory):
    """Headless Chromium follows links as a user would: home → a direction → a neuron → one of
    its contexts' prompts → a search → a named query → the SQL console, which draws a chart. No
    page logs an error or a failed request; a screenshot of each is kept (printed path)."""
    shots = tmp_path_factory.mktemp("screenshots")
    profile = tmp_path_factory.mktemp("chromium")
    walked: list[str] = []

    def go(path: str, name: str) -> str:
        dom, console = visit(served + path, profile, shots / f"{len(walked)}-{name}.png")
        walked.append(path)
        assert dom and "<h1>Not found</h1>" not in dom and "Server error" not in dom, path
        assert not console, (path, console)
        if 'id="status"' in dom:  # a page with charts says whether each one rendered
            assert re.search(r"rendered \d+ charts; errors: 0", dom), (path, dom[-300:])
        return html.unescape(dom)

    home = go("/", "home")
    direction = re.search(r'href="(/direction/[^"]+)"', home)[1]
    neurons = go(direction, "direction")
    neuron = re.search(r'href="(/neuron/[^"]+)"', neurons)[1]
    page = go(neuron, "neuron")
    prompt = re.search(r"href=\"(/prompt/[^\"]+)\"", page.replace("'", '"'))[1]
    go(prompt, "prompt")
    layer, index = re.search(r"/neuron/[^/]+/(\d+)/(\d+)", neuron).groups()
    go(f"/search?neuron={layer}:{index}&model=model", "search")
    go("/query/tracked_write?base_run=base&tuned_run=tuned&direction=" + quote(IMG), "query")
    console = go("/sql?q=" + quote("select pos, dot, layer from projections limit 200"), "sql")
    assert "<svg" in console.split('id="chart"', 1)[1], "the SQL console drew no chart"
    assert len(list(shots.glob("*.png"))) == len(walked) == 7
    print(f"screenshots: {shots}")


def test_a_neuron_page_of_a_model_without_directions(tmp_path):
    """Value vectors indexed before any direction was registered: the neuron page says so
    (an empty cosine table), not a 500."""
    from tiny_models import build_gpt2

    wh = tmp_path / "wh"
    cli("index-vectors", wh, "--model", build_gpt2(tmp_path / "model"), "--no-progress")
    page = TestClient(make_app(wh)).get("/neuron/model/0/1")
    assert page.status_code == 200, page.text[-400:]
    assert "Cosine with each direction" in page.text and "Nearest value vectors" in page.text
