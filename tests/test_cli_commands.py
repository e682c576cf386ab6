"""The commands users type (README: Set-up and run, Server/client/CLI, Kafka ingestion):
``scripts/demo.sh`` / ``rtindex demo``, ``rtindex produce`` and ``rtindex stats``, run as
real processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient
from server_process import clean_env
from streams import Model, assert_matches

from rtindex.client import IndexClient
from rtindex.consumers.sources import churn_changes
from rtindex.service.server import IndexServer
from rtindex.service.settings import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO = ("--n", "2000", "--dim", "16", "--M", "8", "--ef-construction", "64", "--churn-rounds", "1")


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=clean_env(), cwd=ROOT)


def _rtindex(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, "-m", "rtindex", *args, timeout=timeout)


def _recall_by_ef(out: str, section: str) -> dict[int, float]:
    """ef -> recall@10 from the markdown table under ``section`` in the demo's output."""
    table = out.split(section, 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    return {int(row[0]): float(row[1]) for row in rows}


def test_rtindex_demo_loads_searches_churns_and_prints_its_tables() -> None:
    done = _rtindex("demo", *DEMO)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "upserted 2,000 items" in out and "churn: 1 rounds" in out and "live items 2,000" in out
    for section in ("## search after build", "## search after churn"):
        recall = _recall_by_ef(out, section)
        assert sorted(recall) == [16, 32, 64, 128]
        assert recall[128] >= 0.9, (section, recall)  # measured against exact ground truth


def test_scripts_demo_sh_runs_the_demo_in_the_projects_environment() -> None:
    done = _run("bash", "scripts/demo.sh", *DEMO)
    assert done.returncode == 0, done.stderr
    # set up by scripts/test.sh (extras dev,tf,gpu): the demo's smaller set (dev) must not reinstall
    assert "bootstrap: installing" not in done.stdout, done.stdout
    assert "## search after build" in done.stdout and "## search after churn" in done.stdout


@pytest.fixture
def server() -> Iterator[IndexServer]:
    srv = IndexServer(ServerConfig(port=0, dim=8, log_level="warning"))
    srv.start()
    srv.mark_ready()
    yield srv
    srv.stop(grace=1)


def test_rtindex_stats_prints_what_the_stats_rpc_reports(server: IndexServer) -> None:
    target = f"127.0.0.1:{server.port}"
    with IndexClient(target) as client:
        client.upsert(np.arange(50), np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32))
        client.delete([3, 4])
        client.wait_until_serving(120)  # the kernel warm-up may still run
        done = _rtindex("stats", "--target", target, "--json", timeout=120)
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)
        expected = client.stats()
    assert printed["health"] == "SERVING"
    for key in ("items", "dim", "metric", "nodes_live", "write_ids", "server_rpc_Upsert_ok", "server_rpc_Delete_ok"):
        assert printed[key] == expected[key], key
    assert printed["items"] == 48

    table = _rtindex("stats", "--target", target, timeout=120)
    assert table.returncode == 0, table.stderr
    assert re.search(r"^items\s+48$", table.stdout, re.M) and re.search(r"^health\s+SERVING$", table.stdout, re.M)


def test_rtindex_stats_against_no_server_says_so_and_exits_one() -> None:
    done = _rtindex("stats", "--target", "127.0.0.1:1", "--timeout", "2", timeout=120)
    assert done.returncode == 1
    assert "127.0.0.1:1" in done.stderr and "UNAVAILABLE" in done.stderr


@pytest.mark.kafka
def test_rtindex_produce_writes_a_churn_stream_a_server_then_serves(kafka_bootstrap: str) -> None:
    topic = f"rtindex-test-produce-{uuid.uuid4().hex[:10]}"
    done = _rtindex("produce", "--bootstrap", kafka_bootstrap, "--topic", topic, "--partitions", "2",
                    "--churn", "2000", "--dim", "16", "--live", "500", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert f"produced 2,000 changes to {topic}" in done.stdout
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert len(topics[topic].partitions) == 2 and f"{topic}.dlq" in topics  # created, with its dead-letter topic

    model = Model.of(list(churn_changes(2000, 16, 500, 3)))  # the stream the command says it produced
    server = IndexServer(ServerConfig(port=0, dim=16, kafka_bootstrap=kafka_bootstrap, kafka_topic=topic,
                                      kafka_group=f"g-{topic}", kafka_ready_lag=0, log_level="warning"))
    server.start()
    try:
        with IndexClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            client.wait_until_serving(120)
            stats = client.stats()
            assert stats["kafka_consumed"] == 2000 and stats["kafka_dead_letters"] == 0
            assert_matches(client, model)
    finally:
        server.stop(grace=1)


@pytest.mark.kafka
def test_rtindex_produce_sends_categories_and_the_taxonomy(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"rtindex-test-produce-cat-{uuid.uuid4().hex[:10]}"
    vectors = np.random.default_rng(4).standard_normal((60, 8)).astype(np.float32)
    np.save(tmp_path / "rows.npy", vectors)
    (tmp_path / "cats.txt").write_text("".join(f"{10 + i % 3}\n" if i % 4 else "\n" for i in range(60)))
    (tmp_path / "edges.csv").write_text("child,parent\n10,1\n11,1\n12,2\n")
    (tmp_path / "short.txt").write_text("1\n2 3\n")
    bad = _rtindex("produce", "--bootstrap", kafka_bootstrap, "--topic", topic, "--file", str(tmp_path / "rows.npy"),
                   "--categories", str(tmp_path / "short.txt"))
    assert bad.returncode == 2 and "2 lines for 60 rows" in bad.stderr  # refused before anything is produced
    done = _rtindex("produce", "--bootstrap", kafka_bootstrap, "--topic", topic, "--file", str(tmp_path / "rows.npy"),
                    "--categories", str(tmp_path / "cats.txt"), "--taxonomy", str(tmp_path / "edges.csv"))
    assert done.returncode == 0, done.stderr
    assert f"produced 60 changes to {topic}" in done.stdout and "3 taxonomy edges" in done.stdout

    server = IndexServer(ServerConfig(port=0, dim=8, kafka_bootstrap=kafka_bootstrap, kafka_topic=topic,
                                      kafka_group=f"g-{topic}", kafka_ready_lag=0, log_level="warning"))
    server.start()
    try:
        with IndexClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            client.wait_until_serving(120)
            children, parents = client.category_parents()
            assert dict(zip(children.tolist(), parents.tolist(), strict=True)) == {10: 1, 11: 1, 12: 2}
            res = client.search(vectors[:3], k=60, categories=[1, 2, 10])
            in_1 = {i for i in range(60) if i % 4 and (10 + i % 3) in (10, 11)}
            in_2 = {i for i in range(60) if i % 4 and 10 + i % 3 == 12}
            in_10 = {i for i in range(60) if i % 4 and i % 3 == 0}
            for j, members in enumerate((in_1, in_2, in_10)):
                for row in res.ids[:, j]:
                    assert set(row[row >= 0].tolist()) == members  # k = 60: every member, only members
    finally:
        server.stop(grace=1)


def test_rtindex_categories_set_and_list_round_trip_the_taxonomy(server: IndexServer, tmp_path: Path) -> None:
    target = f"127.0.0.1:{server.port}"
    with IndexClient(target) as client:
        vectors = np.random.default_rng(1).standard_normal((30, 8)).astype(np.float32)
        client.upsert(np.arange(30), vectors, categories=[[20 + i % 3] for i in range(30)])  # 10 items per leaf

        done = _rtindex("categories", "set", "--target", target, "20:2", "21:2", timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"set the parent of 2 categories on {target}; 20 items moved" in done.stdout
        edges = tmp_path / "edges.csv"
        edges.write_text("child,parent\n# leaf 22 under root 3\n22,3\n\n")
        done = _rtindex("categories", "set", "--target", target, "--file", str(edges), timeout=120)
        assert done.returncode == 0, done.stderr
        assert "10 items moved" in done.stdout

        listed = _rtindex("categories", "list", "--target", target, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout == "child,parent\n20,2\n21,2\n22,3\n"
        as_json = _rtindex("categories", "list", "--target", target, "--json", timeout=120)
        assert json.loads(as_json.stdout) == [{"child": 20, "parent": 2}, {"child": 21, "parent": 2},
                                              {"child": 22, "parent": 3}]
        children, parents = client.category_parents()
        assert dict(zip(children.tolist(), parents.tolist(), strict=True)) == {20: 2, 21: 2, 22: 3}
        members_of_2 = client.search(vectors[:2], k=30, categories=[2]).ids
        assert set(members_of_2[members_of_2 >= 0].tolist()) == {i for i in range(30) if i % 3 < 2}

        # what `list` prints, `set --file` reads; --replace makes it the whole taxonomy
        edges.write_text("child,parent\n21,3\n")
        done = _rtindex("categories", "set", "--target", target, "--file", str(edges), "--replace", timeout=120)
        assert done.returncode == 0, done.stderr
        children, parents = client.category_parents()
        assert dict(zip(children.tolist(), parents.tolist(), strict=True)) == {21: 3}

        # refused: a cycle (by the server), a malformed edge, nothing to do; the taxonomy stays
        cycle = _rtindex("categories", "set", "--target", target, "3:21", timeout=120)
        assert cycle.returncode == 1 and "INVALID_ARGUMENT" in cycle.stderr and "cycle" in cycle.stderr
        malformed = _rtindex("categories", "set", "--target", target, "5-3", timeout=120)
        assert malformed.returncode == 2 and "CHILD:PARENT" in malformed.stderr
        edges.write_text("child,parent\n4,1,9\n")
        bad_file = _rtindex("categories", "set", "--target", target, "--file", str(edges), timeout=120)
        assert bad_file.returncode == 2 and f"{edges}:2" in bad_file.stderr
        nothing = _rtindex("categories", "set", "--target", target, timeout=120)
        assert nothing.returncode == 2 and "no edges" in nothing.stderr
        children, parents = client.category_parents()
        assert dict(zip(children.tolist(), parents.tolist(), strict=True)) == {21: 3}


def test_rtindex_search_prints_the_results_the_client_gets(server: IndexServer, tmp_path: Path) -> None:
    target = f"127.0.0.1:{server.port}"
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((3, 8)).astype(np.float32)
    np.save(tmp_path / "queries.npy", queries)
    with IndexClient(target) as client:
        client.upsert(np.arange(40), rng.standard_normal((40, 8)).astype(np.float32),
                      categories=[[20 + i % 2] for i in range(40)])
        plain = client.search(queries, k=4)
        by_category = client.search(queries, k=[3, 2, 1], categories=[20, 21, 99])

    done = _rtindex("search", "--target", target, "--queries", str(tmp_path / "queries.npy"), "--k", "4", "--json",
                    timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["query"] for r in rows] == [0, 1, 2]
    assert [r["ids"] for r in rows] == plain.ids.tolist()
    np.testing.assert_allclose([r["scores"] for r in rows], plain.scores, rtol=1e-6)

    done = _rtindex("search", "--target", target, "--queries", str(tmp_path / "queries.npy"), "--categories",
                    "20,21,99", "--k", "3,2,1", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["query"], r["category"]) for r in rows] == [(q, c) for q in range(3) for c in (20, 21, 99)]
    for r in rows:
        expected = by_category.ids[r["query"], [20, 21, 99].index(r["category"])]
        assert r["ids"] == expected[expected >= 0].tolist()  # padding is not printed
        assert all(i % 2 == r["category"] - 20 for i in r["ids"]) and (r["category"] != 99 or r["ids"] == [])

    text = _rtindex("search", "--target", target, "--queries", str(tmp_path / "queries.npy"), "--limit", "1",
                    "--categories", "21,99", timeout=120)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == "query 0 category 99: (no items)"
    assert re.fullmatch(r"query 0 category 21:( \d+:-?[\d.e+-]+){10}", lines[0])

    wrong = _rtindex("search", "--target", target, "--queries", str(tmp_path / "queries.npy"), "--k", "3,2",
                     timeout=120)
    assert wrong.returncode == 2 and "needs --categories" in wrong.stderr
