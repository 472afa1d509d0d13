"""Shared memory (FTS5/BM25) and literature search: offline folder provider on real PDF and
Markdown files, online providers against a local HTTP server speaking their real formats."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlgym.tools.literature import (
    ArxivProvider,
    FallbackChain,
    LiteratureError,
    OfflineProvider,
    OpenAlexProvider,
    ResultCache,
    SemanticScholarProvider,
    format_results,
    parse_pdf,
)
from mlgym.tools.memory import MemoryInputError, MemoryStore


def make_pdf(path: Path, lines: list[str]) -> None:
    """A minimal, valid one-page PDF with Helvetica text (no PDF library writes text for us)."""
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(
        "(" + ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") '" for ln in lines
    ) + " ET"
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)


# ---------------------------------------------------------------------------- memory


def test_memory_ranks_relevant_notes_first(tmp_path):
    store = MemoryStore(tmp_path / "mem.sqlite")
    store.write("Learning rate 3e-4 with AdamW worked best for the CNN", tags=["cifar", "lr"], author="coder", task="cifar")
    store.write("Tit-for-tat beats the random column player in prisoners dilemma", tags=["games"], author="planner", task="pd")
    store.write("Batch size 256 was too large; the learning rate needed warmup", tags=["lr"], author="coder", task="cifar")
    store.write("Unrelated: the weather is nice", author="literature", task="cifar")
    hits = store.search("which learning rate worked best?", k=3)
    assert hits[0].text.startswith("Learning rate 3e-4")
    assert all("weather" not in h.text for h in hits)
    assert hits[0].score >= hits[-1].score
    assert store.search("tit-for-tat", k=5)[0].author == "planner"
    # per-task filter and persistence across reopen (kept per task across runs)
    store.close()
    again = MemoryStore(tmp_path / "mem.sqlite")
    assert [h.memory_id for h in again.search("learning rate", k=5, task="pd")] == []
    assert len(again.search("learning rate", k=5, task="cifar")) == 2
    assert again.count("cifar") == 3


def test_memory_bad_input_and_fts_syntax_is_safe(tmp_path):
    store = MemoryStore(tmp_path / "m.sqlite")
    with pytest.raises(MemoryInputError, match="needs some text"):
        store.write("   ")
    with pytest.raises(MemoryInputError, match="between 1 and 100"):
        store.search("x", k=0)
    store.write('use "quotes" AND NOT (parens) near* ^col:umn')
    assert store.search('"quotes" AND NOT (parens)', k=1)[0].text.startswith("use")
    assert store.search("!!!", k=1) == []


def test_memory_optional_embedding_reranker(tmp_path):
    def embed(texts):  # a real callable: bag of letters, enough to reorder
        return [[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts]

    store = MemoryStore(tmp_path / "e.sqlite", embed=embed)
    store.write("zzz alpha")
    store.write("alpha beta gamma alpha")
    hits = store.search("alpha beta gamma", k=2)
    assert hits[0].text == "alpha beta gamma alpha"


def test_memory_merges_identical_and_near_identical_notes(tmp_path):
    store = MemoryStore(tmp_path / "mem.sqlite")
    note = ("Tit-for-tat against the published opponent mix scored 2.31 on validation; "
            "grim trigger did worse")
    first = store.write(note, tags=["games"], author="literature", task="pd")
    assert first[1] == 1
    # the same words (case, punctuation, spacing aside): merged
    shouted = note.upper().replace(";", ",") + "  "
    assert store.write(shouted, author="literature", task="pd") == (first[0], 2)
    # nearly the same words, same numbers, another author: merged, the author joins the sources
    near = note.replace("did worse", "did clearly worse")
    assert store.write(near, tags=["strategy"], author="planner", task="pd") == (first[0], 3)
    # alike words but another number: a different finding, kept apart
    other = note.replace("2.31", "2.35")
    assert store.write(other, author="coder", task="pd")[1] == 1
    # the same note for another task is that task's own entry
    assert store.write(note, author="literature", task="blotto")[1] == 1
    assert store.count("pd") == 2 and store.writes("pd") == 4 and store.count() == 3
    hits = store.search("tit-for-tat grim trigger", k=5, task="pd")
    assert [h.text for h in hits].count(note) == 1  # not repeated
    merged = next(h for h in hits if h.memory_id == first[0])
    assert merged.count == 3 and merged.sources == ["literature", "planner"]
    assert merged.tags == ["games", "strategy"] and merged.text == note  # the first wording kept
    # the merged entry is still found by its words (the FTS index follows the tag update)
    assert store.search("strategy", k=1, task="pd")[0].memory_id == first[0]
    # stored once even after a reopen
    store.close()
    again = MemoryStore(tmp_path / "mem.sqlite")
    assert again.write(note, author="coder", task="pd") == (first[0], 4)
    hits = again.search("tit-for-tat", k=5, task="pd")
    assert {h.memory_id: h.sources for h in hits}[first[0]] == ["literature", "planner", "coder"]


def test_memory_relevance_is_normalised_bm25(tmp_path):
    """score in [0, 1] = coverage of the query's words x bm25 relative to the best hit; it is
    not ~0 in a store of one note, where FTS5's bm25 itself is ~0 (its idf is clamped)."""
    store = MemoryStore(tmp_path / "r.sqlite")
    store.write("AdamW with learning rate 3e-4 and cosine decay worked best", task="t")
    (only,) = store.search("learning rate for AdamW", k=5)  # "for": a stop word
    assert abs(only.bm25) < 1e-4 and only.score == 1.0
    store.write("Batch size 256 needed a longer warmup of the learning rate", task="t")
    store.write("Dropout 0.1 helped the small model", task="t")
    store.write("Weight decay 0.05 was better than 0.01", task="t")
    store.write("Label smoothing did not help", task="t")
    hits = store.search("AdamW learning rate cosine", k=5)
    assert [round(h.score, 2) for h in hits][0] == 1.0 and hits[0].text.startswith("AdamW")
    assert len(hits) == 2 and 0 < hits[1].score < 0.6  # two of four words, lower bm25
    assert all(0.0 <= h.score <= 1.0 for h in hits) and hits[0].bm25 < hits[1].bm25 < 0
    # stop words are not query words: "the" and "of" alone do not match everything
    assert [h.text[:7] for h in store.search("the warmup of", k=5)] == ["Batch s"]
    # a query of stop words only is searched as it is
    assert store.search("to be or not to be", k=5)[0].text.startswith("Label")


def test_memory_search_cli_shows_relevance_count_and_sources(tmp_path):
    from click.testing import CliRunner

    from mlgym.tools.cli import memory

    db = tmp_path / "m.sqlite"
    store = MemoryStore(db)
    for author in ("literature", "planner"):
        store.write("Tit-for-tat won Axelrod's tournaments", author=author, task="pd")
    store.write("best candidate tit_for_tat scored 2.41", author="planner", task="pd")
    store.close()
    out = CliRunner().invoke(memory, ["search", "tit for tat strategy", "--db", str(db)]).output
    lines = out.splitlines()
    assert lines[0].startswith("# [id] relevance xN")
    assert lines[1] == "[1] 0.67 x2 (literature,planner; ) Tit-for-tat won Axelrod's tournaments"
    assert lines[2].startswith("[2] 0.") and " x1 (planner; ) best candidate" in lines[2]
    out = CliRunner().invoke(memory, ["search", "zebra", "--db", str(db)]).output
    assert out == 'no memory entries match "zebra"\n'


def test_memory_store_of_version_1_is_migrated_and_its_duplicates_merged(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE memories(id INTEGER PRIMARY KEY, task TEXT NOT NULL, author TEXT NOT NULL,
          tags TEXT NOT NULL, text TEXT NOT NULL, created REAL NOT NULL);
        CREATE VIRTUAL TABLE memories_fts USING fts5(text, tags, content='memories',
          content_rowid='id', tokenize='porter unicode61');
        CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
          INSERT INTO memories_fts(rowid, text, tags) VALUES (new.id, new.text, new.tags);
        END;""")
    for author in ("literature", "literature", "planner"):  # what every run used to store again
        db.execute("INSERT INTO memories(task, author, tags, text, created) VALUES (?,?,?,?,?)",
                   ("pd", author, "literature", "Pavlov corrects mistakes faster under noise.",
                    1.0))
    db.execute("INSERT INTO memories(task, author, tags, text, created) VALUES "
               "('pd', 'coder', 'coder', 'Grim trigger loses to noise.', 2.0)")
    db.commit()
    db.close()
    store = MemoryStore(path)
    assert store.count("pd") == 2 and store.writes("pd") == 4
    hits = store.search("noise", k=5)
    assert len(hits) == 2
    pavlov = next(h for h in hits if h.text.startswith("Pavlov"))
    assert pavlov.count == 3 and pavlov.sources == ["literature", "planner"]
    again = store.write("pavlov corrects mistakes faster under noise", task="pd")
    assert again == (pavlov.memory_id, 4)


# ---------------------------------------------------------------------------- offline literature


def test_offline_provider_on_pdfs_and_markdown(tmp_path):
    papers = tmp_path / "papers"
    papers.mkdir()
    make_pdf(papers / "ppo.pdf", ["Proximal Policy Optimization Algorithms", "We propose clipped surrogate objectives", "for policy gradient reinforcement learning."])
    (papers / "resnet.md").write_text("# Deep Residual Learning\n\nResidual connections ease training of very deep convolutional networks for image classification.\n")
    (papers / "notes.txt").write_text("Dropout regularises neural networks by randomly zeroing units.\n")
    (papers / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    provider = OfflineProvider(papers, index_path=tmp_path / "idx.sqlite")
    found = asyncio.run(provider.search("policy gradient clipped surrogate", 3))
    assert found[0].title == "Proximal Policy Optimization Algorithms"
    assert "surrogate" in found[0].snippet
    found = asyncio.run(provider.search("residual image classification", 2))
    assert found[0].title == "Deep Residual Learning"
    assert provider.index() == 0  # nothing changed: nothing re-indexed
    (papers / "notes.txt").write_text("Dropout and batch normalisation for residual networks.\n")
    assert provider.index() == 1
    text = format_results("residual", asyncio.run(provider.search("residual", 5)))
    assert "Deep Residual Learning" in text and "[source: offline]" in text


# A small corpus with known answers: the notes shipped for the literature agent, plus papers
# chosen to trap a ranking without stop words or minimum coverage.
KNOWN_CORPUS = {
    "segmentation.md": "# Methods for Medical Image Segmentation\n\nWe review methods for "
    "segmenting organs, for tumour outlines and for cell counting; for each task we compare "
    "U-Net variants for accuracy and for speed.\n",
    "large-batch.md": "# An Empirical Model of Large-Batch Training\n\n## Abstract\n\nThe "
    "gradient noise scale predicts the largest useful batch size across domains, from image "
    "classifiers to transformers trained on language.\n\n## 1 Introduction\n\nData "
    "parallelism splits each batch across workers.\n",
    "attention.md": "# Attention Is All You Need\n\nThe Transformer, a sequence model based "
    "only on attention, replaces recurrence and trains faster on translation.\n",
    "adam.md": "# Adam: A Method for Stochastic Optimization\n\nAdam keeps running averages "
    "of the gradient and its square; the noise of the gradient estimate is damped.\n",
    "dropout.md": "# Dropout: A Simple Way to Prevent Neural Networks from Overfitting\n\n"
    "Randomly dropping units during training adds noise that regularises the network.\n",
    "survey.md": "# A Survey of Deep Learning Tricks\n\nWe list many tricks.\n\n"
    + "Batch normalisation, warmup and weight decay are common. " * 20
    + "\n\nDeeper networks use residual connections, and residual connections help.\n",
    "resnet.md": "# Deep Residual Learning for Image Recognition\n\nShortcut connections "
    "ease the training of very deep convolutional networks.\n",
    "skip.md": "# Notes on Skip Connections\n\nSkip connections in deep networks.\n\nResidual "
    "blocks, residual networks and residual streams: residual paths everywhere in networks.\n",
    "tricks.md": "# Training Tricks\n\nWe list tricks.\n\nBatch size matters: batch size 256, "
    "batch norm, a large batch size with warmup.\n",
}


@pytest.fixture
def known_corpus(tmp_path):
    from mlgym.agents.research import NOTES_DIR

    folder = tmp_path / "papers"
    folder.mkdir()
    for note in NOTES_DIR.glob("*.md"):
        (folder / note.name).write_text(note.read_text())
    for name, text in KNOWN_CORPUS.items():
        (folder / name).write_text(text)
    provider = OfflineProvider(folder, index_path=tmp_path / "idx.sqlite")
    return lambda query, n=5: [p.title for p in asyncio.run(provider.search(query, n))]


def test_offline_search_known_answers(known_corpus):
    # "for" is a stop word: the segmentation review, full of it, is not a hit for "tit for tat"
    assert known_corpus("tit for tat") == ["Strategies for the iterated prisoner's dilemma"]
    # one of three words in common ("noise") is not enough: no prisoner's-dilemma note
    found = known_corpus("gradient noise transformers")
    assert found[0] == "An Empirical Model of Large-Batch Training"
    assert "Strategies for the iterated prisoner's dilemma" not in found
    assert set(found) <= {"An Empirical Model of Large-Batch Training",
                          "Adam: A Method for Stochastic Optimization"}
    # porter stemming: "optimizers" finds "Optimization", "transformers" finds "Transformer"
    assert known_corpus("stochastic optimizers")[0] == "Adam: A Method for Stochastic Optimization"
    assert known_corpus("transformers attention")[0] == "Attention Is All You Need"
    # title and abstract are weighted (with equal weights both of these come out the other
    # way round): a title word outweighs a short body that repeats it four times ...
    assert known_corpus("residual networks")[:2] == [
        "Deep Residual Learning for Image Recognition", "Notes on Skip Connections"]
    # ... and "batch size" once in the abstract outweighs it three times in a short body
    assert known_corpus("batch size")[:2] == [
        "An Empirical Model of Large-Batch Training", "Training Tricks"]
    # only stop words: searched as they are, rather than nothing
    assert "Methods for Medical Image Segmentation" in known_corpus("for", 10)
    # the shipped notes answer the scripted planner's questions
    assert known_corpus("strategies iterated prisoner dilemma mixture opponents")[0] == (
        "Strategies for the iterated prisoner's dilemma")


def test_offline_index_of_an_older_version_is_rebuilt(tmp_path):
    import sqlite3

    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "a.md").write_text("# Colonel Blotto\n\nSpread the soldiers over the fields.\n")
    index = tmp_path / "idx.sqlite"
    db = sqlite3.connect(index)  # the version 1 layout: no abstract column, user_version 0
    db.executescript(
        "CREATE TABLE docs(path TEXT PRIMARY KEY, mtime REAL, size INTEGER, title TEXT);"
        "CREATE VIRTUAL TABLE chunks USING fts5(path UNINDEXED, title, body);")
    db.close()
    found = asyncio.run(OfflineProvider(folder, index_path=index).search("blotto soldiers", 3))
    assert [p.title for p in found] == ["Colonel Blotto"]
    assert found[0].abstract == "Spread the soldiers over the fields."


def test_fallback_chain_passes_an_empty_answer_on(scholar, tmp_path):
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "a.md").write_text("# Colonel Blotto\n\nSpread the soldiers.\n")
    offline = OfflineProvider(folder, index_path=tmp_path / "idx.sqlite")
    chain = FallbackChain([offline, ArxivProvider(scholar.url + "/api", min_interval_s=0.0)])
    assert asyncio.run(chain.search("colonel blotto", 2))[0].source == "offline"
    assert asyncio.run(chain.search("policy optimization", 2))[0].source == "arxiv"
    assert asyncio.run(FallbackChain([offline]).search("policy optimization", 2)) == []


def test_parse_pdf_local_and_errors(tmp_path):
    make_pdf(tmp_path / "a.pdf", ["Attention is all you need"])
    assert "Attention is all you need" in asyncio.run(parse_pdf(str(tmp_path / "a.pdf")))
    (tmp_path / "bad.pdf").write_bytes(b"nope")
    with pytest.raises(LiteratureError, match="not a readable PDF"):
        asyncio.run(parse_pdf(str(tmp_path / "bad.pdf")))
    with pytest.raises(LiteratureError, match="no such file"):
        asyncio.run(parse_pdf(str(tmp_path / "missing.pdf")))


# ---------------------------------------------------------------------------- online, local server

ATOM_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <entry><id>http://arxiv.org/abs/1707.06347v2</id><published>2017-07-20T02:32:33Z</published>
    <title>Proximal Policy
      Optimization Algorithms</title><summary>We propose a new family of policy gradient methods.</summary>
    <author><name>John Schulman</name></author><author><name>Filip Wolski</name></author></entry>
</feed>"""


class FakeScholarServer:
    """Speaks arXiv's Atom API, Semantic Scholar's graph API and OpenAlex's works API, with
    scripted failures per path."""

    def __init__(self):
        self.failures: dict[str, list[int]] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                path = self.path.split("?")[0]
                queue = outer.failures.get(path)
                if queue:
                    status = queue.pop(0)
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                if path.endswith("/query"):
                    body, ctype = ATOM_FEED.encode(), "application/atom+xml"
                elif path.endswith("/paper/search"):
                    body = json.dumps({"total": 1, "data": [{"paperId": "x", "title": "Deep Residual Learning for Image Recognition", "year": 2016, "url": "https://s2/x", "abstract": "Residual nets.", "authors": [{"name": "Kaiming He"}]}]}).encode()
                    ctype = "application/json"
                elif path.endswith("/works"):
                    body = json.dumps({"results": [{"id": "https://openalex.org/W1", "display_name": "Adam: A Method for Stochastic Optimization", "publication_year": 2014, "doi": "https://doi.org/10.48550/arxiv.1412.6980", "authorships": [{"author": {"display_name": "Diederik P. Kingma"}}], "abstract_inverted_index": {"We": [0], "introduce": [1], "Adam": [2]}}]}).encode()
                    ctype = "application/json"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def scholar():
    server = FakeScholarServer()
    yield server
    server.close()


def test_online_providers_parse_real_formats(scholar, tmp_path):
    kw = {"min_interval_s": 0.0}
    arxiv = asyncio.run(ArxivProvider(scholar.url + "/api", **kw).search("ppo", 2))
    assert arxiv[0].title == "Proximal Policy Optimization Algorithms"
    assert arxiv[0].authors == ["John Schulman", "Filip Wolski"] and arxiv[0].year == 2017
    s2 = asyncio.run(SemanticScholarProvider(scholar.url + "/graph/v1", **kw).search("resnet", 2))
    assert s2[0].authors == ["Kaiming He"] and s2[0].year == 2016
    oa = asyncio.run(OpenAlexProvider(scholar.url, **kw).search("adam", 2))
    assert oa[0].abstract == "We introduce Adam" and oa[0].year == 2014
    assert any("search_query=all%3Appo" in r for r in scholar.requests)


def test_backoff_on_429_cache_and_fallback(scholar, tmp_path):
    cache = ResultCache(tmp_path / "cache.sqlite")
    scholar.failures["/works"] = [429, 503]
    oa = OpenAlexProvider(scholar.url, cache=cache, min_interval_s=0.0)
    assert asyncio.run(oa.search("adam", 1))[0].year == 2014
    assert sum(r.startswith("/works") for r in scholar.requests) == 3
    asyncio.run(oa.search("adam", 1))  # cached: no new request
    assert sum(r.startswith("/works") for r in scholar.requests) == 3

    scholar.failures["/graph/v1/paper/search"] = [500] * 10
    chain = FallbackChain([
        SemanticScholarProvider(scholar.url + "/graph/v1", attempts=2, min_interval_s=0.0),
        ArxivProvider(scholar.url + "/api", min_interval_s=0.0),
    ])
    papers = asyncio.run(chain.search("ppo", 1))
    assert papers[0].source == "arxiv"


def test_offline_failure_is_clear():
    # a closed port: nothing listens, as when the machine is offline
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    chain = FallbackChain([ArxivProvider(f"http://127.0.0.1:{port}/api", attempts=1, min_interval_s=0.0)])
    with pytest.raises(LiteratureError, match="unreachable.*offline"):
        asyncio.run(chain.search("anything", 3))
    with pytest.raises(LiteratureError, match="needs a query"):
        asyncio.run(chain.search("  ", 3))


# ---------------------------------------------------------------------------- the service


async def test_memory_service_over_rpc(tmp_path):
    from mlgym.bus import protocol as p
    from mlgym.bus.base import RpcError
    from mlgym.bus.rpc import RpcClient
    from mlgym.tools.memory_service import MemoryService

    endpoint = f"ipc://{tmp_path}/memory.sock"
    service = MemoryService(endpoint, MemoryStore(tmp_path / "m.sqlite"))
    await service.start()
    client = RpcClient(endpoint, sender="coder")
    try:
        written = await client.request("memory", p.MemoryWrite(text="Ridge alpha 10 beat alpha 0.1 on house prices", tags=["hp"], task="hp"))
        assert isinstance(written, p.MemoryWritten) and written.memory_id == 1
        await client.request("memory", p.MemoryWrite(text="Blotto: spread soldiers evenly", task="blotto"))
        hits = await client.request("memory", p.MemorySearch(query="ridge alpha", k=3, task="hp"))
        assert isinstance(hits, p.MemoryHits) and len(hits.hits) == 1
        assert hits.hits[0].author == "coder" and hits.hits[0].tags == ["hp"]
        same = p.MemoryWrite(text="ridge alpha 10 beat alpha 0.1 on house-prices!", tags=["ridge"],
                             task="hp")
        again = await client.request("memory", same)
        assert isinstance(again, p.MemoryWritten) and (again.memory_id, again.count) == (1, 2)
        hits = await client.request("memory", p.MemorySearch(query="ridge alpha", k=3, task="hp"))
        (hit,) = hits.hits
        assert hit.count == 2 and hit.sources == ["coder"] and hit.tags == ["hp", "ridge"]
        assert hit.score == 1.0 and hit.bm25 < 0
        with pytest.raises(RpcError) as err:
            await client.request("memory", p.MemoryWrite(text=" "))
        assert err.value.code == "bad_request"
    finally:
        await client.close()
        await service.stop()
