"""Command line: ``rtindex serve | demo | produce | stats | search | categories |
snapshot | restore``. ``rtindex <command> --help`` explains every option."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from rtindex.service import logs, settings
from rtindex.service.demo import DemoOptions, run_demo


def _serve(args: argparse.Namespace) -> int:
    from rtindex.service.server import IndexServer

    try:
        config = settings.load(args)
    except ValueError as exc:
        print(f"rtindex serve: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(settings.to_toml(config), end="")
        return 0
    logs.setup(config.log_level, config.log_format)  # before the server: restoring logs
    # the writer, the Kafka consumer and the RPC threads hand the GIL to each other
    # whenever a kernel starts or ends; Python's default 5 ms switch interval made each
    # wait up to that long (1k/s stream: probe p99 341 -> 25 ms at 0.5 ms)
    sys.setswitchinterval(config.gil_switch_ms / 1000)
    try:
        server = IndexServer(config)
    except (ValueError, RuntimeError) as exc:
        print(f"rtindex serve: {exc}", file=sys.stderr)
        return 2
    server.start()
    if server.ingestor is None:
        server.mark_ready()  # with Kafka, the consumer marks it ready once caught up
    server.run_until_signal()
    return 0


def _demo(args: argparse.Namespace) -> int:
    run_demo(DemoOptions(
        dataset=args.dataset, n=args.n, dim=args.dim, M=args.M, ef_construction=args.ef_construction,
        threads=args.threads, churn_rounds=args.churn_rounds, batch=args.batch, seed=args.seed,
    ))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from rtindex.api.client import IndexClient, IndexClientError

    try:
        with IndexClient(args.target, timeout=args.timeout, **_client_security(args)) as client:
            stats = client.stats()
            stats["health"] = client.health()
    except IndexClientError as exc:
        print(f"rtindex stats: {args.target}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
    else:
        width = max(len(k) for k in stats)
        for key in sorted(stats):
            print(f"{key:<{width}}  {stats[key]}")
    return 0


def _int_list(text: str) -> list[int]:
    """``"1,2,3"`` -> [1, 2, 3] (argparse reports the ValueError as a bad value)."""
    return [int(part) for part in text.split(",") if part.strip()]


_int_list.__name__ = "comma-separated integer list"  # argparse names the type in its error


def _pem_file(path: str) -> bytes:
    """A PEM file's bytes, read while the flags are parsed (a bad path is a usage error)."""
    from rtindex.api.client import read_pem

    try:
        return read_pem(path)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _api_key_file(path: str) -> str:
    from rtindex.api.client import read_api_key_file

    try:
        return read_api_key_file(path)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_client_security(parser: argparse.ArgumentParser) -> None:
    """How a client command reaches a server started with API keys or TLS."""
    group = parser.add_argument_group("security", "for a server started with API keys or TLS (README: Running "
                                      "securely)")
    key = group.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="API key sent with each call; a flag shows in ps, so prefer --api-key-file or "
                     "the environment (RTINDEX_API_KEY, or RTINDEX_API_KEY_FILE naming a key file)")
    key.add_argument("--api-key-file", dest="api_key_from_file", type=_api_key_file, metavar="FILE",
                     help="file holding the API key (its first line that is not blank or a # comment)")
    group.add_argument("--tls-ca", type=_pem_file, metavar="PEM",
                       help="CA certificate(s) that signed the server's certificate: connect over TLS")
    group.add_argument("--tls", action="store_true",
                       help="connect over TLS, verifying the server with the system's trusted CAs")
    group.add_argument("--tls-cert", type=_pem_file, metavar="PEM",
                       help="this client's certificate, for a server that requires mutual TLS (with --tls-key)")
    group.add_argument("--tls-key", type=_pem_file, metavar="PEM", help="the private key of --tls-cert")


def _client_security(args: argparse.Namespace) -> dict[str, Any]:
    """IndexClient's security arguments: the flags, else the key from the environment
    (exits 2 saying what is wrong)."""
    import os

    from rtindex.api.client import check_api_key

    try:
        key = args.api_key or args.api_key_from_file or os.environ.get("RTINDEX_API_KEY") or None
        if key is None and os.environ.get("RTINDEX_API_KEY_FILE"):
            key = _api_key_file(os.environ["RTINDEX_API_KEY_FILE"])
        if key is not None:
            check_api_key(key)
        if (args.tls_cert is None) != (args.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together (the client certificate and its private key)")
    except (ValueError, argparse.ArgumentTypeError) as exc:
        print(f"rtindex {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return {"api_key": key, "tls": args.tls, "tls_ca": args.tls_ca, "tls_cert": args.tls_cert,
            "tls_key": args.tls_key}


def _search(args: argparse.Namespace) -> int:
    from rtindex.api.client import IndexClient, IndexClientError

    try:
        if args.dataset:
            from rtindex import datasets

            queries = datasets.load(args.dataset).queries
        else:
            from rtindex.consumers.sources import load_vectors

            queries = load_vectors(args.queries)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"rtindex search: cannot read the queries: {exc}", file=sys.stderr)
        return 2
    if len(args.k) != 1 and not args.categories:
        print("rtindex search: --k with several numbers gives one quota per category; it needs --categories",
              file=sys.stderr)
        return 2
    queries = queries[args.first:args.first + args.limit]
    if len(queries) == 0:
        print(f"rtindex search: no queries left after --first {args.first} --limit {args.limit}", file=sys.stderr)
        return 2
    k: Any = args.k[0] if len(args.k) == 1 else args.k
    try:
        with IndexClient(args.target, timeout=args.timeout, **_client_security(args)) as client:
            res = client.search(queries, k=k, ef=args.ef or None, categories=args.categories)
    except (IndexClientError, ValueError) as exc:
        print(f"rtindex search: {args.target}: {exc}", file=sys.stderr)
        return 1
    ids, scores = res.ids, res.scores
    groups = args.categories or [None]
    if ids.ndim == 2:  # a plain search: one group of results per query
        ids, scores = ids[:, None, :], scores[:, None, :]
    for q in range(len(ids)):
        for g, category in enumerate(groups):
            found = ids[q, g] >= 0  # padding (-1 / -inf) is not printed
            hits = [(int(i), float(sc)) for i, sc in zip(ids[q, g][found], scores[q, g][found], strict=True)]
            number = args.first + q
            if args.json:
                row: dict[str, Any] = {"query": number}
                if category is not None:
                    row["category"] = category
                row.update(ids=[i for i, _ in hits], scores=[sc for _, sc in hits])
                print(json.dumps(row))
            else:
                label = f"query {number}" + ("" if category is None else f" category {category}")
                print(f"{label}: " + (" ".join(f"{i}:{sc:.6g}" for i, sc in hits) or "(no items)"))
    return 0


def _parse_edge(text: str, where: str) -> tuple[int, int]:
    child, sep, parent = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(child), int(parent)
    except ValueError:
        raise ValueError(f"{where}: expected CHILD:PARENT category ids (PARENT -1 makes CHILD a root), got "
                         f"{text!r}") from None


def _read_edges(path: str) -> list[tuple[int, int]]:
    """child,parent rows of a CSV file; blank lines, lines starting with # and a
    ``child,parent`` header are skipped."""
    edges = []
    with open(path, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            cells = [cell.strip() for cell in row]
            if not any(cells) or cells[0].startswith("#") or [c.lower() for c in cells] == ["child", "parent"]:
                continue
            if len(cells) != 2:
                raise ValueError(f"{path}:{line}: expected two columns child,parent (parent -1 makes the child a "
                                 f"root), got {row!r}")
            edges.append(_parse_edge(":".join(cells), f"{path}:{line}"))
    return edges


def _categories_set(args: argparse.Namespace) -> int:
    from rtindex.api.client import IndexClient, IndexClientError

    try:
        edges = [_parse_edge(text, "rtindex categories set") for text in args.edges]
        if args.file:
            edges += _read_edges(args.file)
    except (OSError, ValueError) as exc:
        print(f"rtindex categories set: {exc}", file=sys.stderr)
        return 2
    if not edges and not args.replace:
        print("rtindex categories set: no edges; give CHILD:PARENT arguments or --file CSV", file=sys.stderr)
        return 2
    children = [c for c, _ in edges]
    parents = [p for _, p in edges]
    try:
        with IndexClient(args.target, timeout=args.timeout, **_client_security(args)) as client:
            if args.replace:  # every other category that has a parent now becomes a root, in the same call
                named = set(children)
                old = [int(c) for c in client.category_parents()[0] if int(c) not in named]
                children, parents = children + old, parents + [-1] * len(old)
            moved = client.set_category_parents(children, parents)
    except (IndexClientError, ValueError) as exc:
        print(f"rtindex categories set: {args.target}: {exc}", file=sys.stderr)
        return 1
    print(f"set the parent of {len(children):,} categories on {args.target}; {moved:,} items moved")
    return 0


def _categories_list(args: argparse.Namespace) -> int:
    from rtindex.api.client import IndexClient, IndexClientError

    try:
        with IndexClient(args.target, timeout=args.timeout, **_client_security(args)) as client:
            children, parents = client.category_parents()
    except IndexClientError as exc:
        print(f"rtindex categories list: {args.target}: {exc}", file=sys.stderr)
        return 1
    order = children.argsort(kind="stable")
    edges = [(int(children[i]), int(parents[i])) for i in order]
    if args.json:
        print(json.dumps([{"child": c, "parent": p} for c, p in edges]))
    else:  # the CSV `rtindex categories set --file` reads
        print("child,parent")
        for c, p in edges:
            print(f"{c},{p}")
    return 0


def _produce(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rtindex.consumers.codec import encode_body
    from rtindex.consumers.producer import CatalogProducer, ensure_topic
    from rtindex.consumers.sources import churn_changes, dataset_changes, load_vectors

    if args.file:
        vectors = load_vectors(args.file)
        changes, total = dataset_changes(vectors, args.start_id, args.version), len(vectors)
    elif args.dataset:
        from rtindex import datasets

        vectors = datasets.load(args.dataset).base
        changes, total = dataset_changes(vectors, args.start_id, args.version), len(vectors)
    else:
        try:
            changes, total = churn_changes(args.churn, args.dim, args.live, args.seed), args.churn
        except ValueError as exc:
            print(f"rtindex produce: {exc} (--churn, --live)", file=sys.stderr)
            return 2
    try:
        edges = _read_edges(args.taxonomy) if args.taxonomy else []
        categories = _read_item_categories(args.categories, total) if args.categories else None
        if categories is not None and args.churn:
            raise ValueError("--categories goes with --file or --dataset (one line per row), not --churn")
    except (OSError, ValueError) as exc:
        print(f"rtindex produce: {exc}", file=sys.stderr)
        return 2
    try:
        ensure_topic(args.bootstrap, args.topic, args.partitions)
    except (RuntimeError, Exception) as exc:
        print(f"rtindex produce: {exc}", file=sys.stderr)
        return 1
    producer = CatalogProducer(args.bootstrap, args.topic, rate=args.rate)
    if edges:  # the taxonomy first: consumers apply its edges before the items polled with them
        producer.set_category_parents([c for c, _ in edges], [p for _, p in edges])
    for op, item, version, row in tqdm(changes, total=total, desc=f"produce -> {args.topic}", unit="msg"):
        item_categories = None if categories is None else categories[item - args.start_id]
        producer.send_stamped(*encode_body(op, item, version, row, item_categories))
    producer.flush()
    print(f"produced {producer.sent - len(edges):,} changes to {args.topic} on {args.bootstrap}"
          + (f" and {len(edges):,} taxonomy edges to {producer.taxonomy_topic}" if edges else ""))
    return 0


def _read_item_categories(path: str, rows: int) -> list[list[int]]:
    """One line per row: its category ids, separated by commas or spaces (a blank line:
    none)."""
    out = []
    with open(path) as f:
        for line, text in enumerate(f, start=1):
            try:
                out.append([int(c) for c in text.replace(",", " ").split()])
            except ValueError:
                raise ValueError(f"{path}:{line}: expected category ids separated by commas or spaces, got "
                                 f"{text.strip()!r}") from None
    if len(out) != rows:
        raise ValueError(f"{path} has {len(out)} lines for {rows} rows; give one line per row (blank: no categories)")
    return out


@contextlib.contextmanager
def _byte_progress(desc: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar in bytes; yields the (done, total) callback the snapshot calls take."""
    from tqdm import tqdm

    with tqdm(total=0, unit="B", unit_scale=True, desc=desc) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield progress


def _snapshot(args: argparse.Namespace) -> int:
    from rtindex.api.client import IndexClient, IndexClientError

    try:
        with _byte_progress(f"snapshot {args.target}") as progress, \
                IndexClient(args.target, timeout=args.timeout, **_client_security(args)) as client:
            info = client.snapshot(progress, timeout=args.timeout)
    except IndexClientError as exc:
        print(f"rtindex snapshot: {args.target}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2, sort_keys=True))
    return 0


def _restore(args: argparse.Namespace) -> int:
    """List the snapshots of a data directory, verify them, load one and describe it."""
    from rtindex.core.index import Index
    from rtindex.snapshots.store import SnapshotError, SnapshotStore

    store = SnapshotStore(args.data_dir)
    seqs = store.sequence_numbers()
    if not seqs:
        print(f"rtindex restore: no snapshots in {store.root}", file=sys.stderr)
        return 1
    for seq in seqs:
        try:
            i = store.info(seq)
            print(f"snapshot {seq:6d}  items {i.items:>12,}  {i.bytes / 2**20:10.1f} MiB  "
                  f"written {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(i.created))}  "
                  f"kafka {json.dumps((i.extra.get('kafka') or {}).get('offsets', {}))}  "
                  f"write-ahead log through {(i.extra.get('wal') or {}).get('seq', 0)}")
        except SnapshotError as exc:
            print(f"snapshot {seq:6d}  UNUSABLE: {exc}")
    candidates = [args.seq] if args.seq else list(reversed(seqs))
    for seq in candidates:
        try:
            with _byte_progress(f"verify {seq}") as progress:
                state, _ = store.load(seq, progress)
        except SnapshotError as exc:
            print(f"snapshot {seq}: {exc}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        index = Index.from_state(state)
        stats = index.stats()
        print(f"snapshot {seq} verified (every checksum matches) and loaded in {time.perf_counter() - t0:.2f} s: "
              f"{stats['items']:,} items, {stats['nodes_live']:,} live nodes, dim {stats['dim']}, "
              f"metric {stats['metric']}; `rtindex serve --data-dir {args.data_dir}` starts from it")
        index.close()
        return 0
    print("rtindex restore: no usable snapshot", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtindex", description="rtindex: real-time incremental vector index server")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="run the gRPC server",
        description="Serve one index over gRPC (IndexService, grpc.health.v1, reflection). Settings come from "
        "defaults < --config TOML file < RTINDEX_* environment variables < these flags. SIGTERM drains "
        "in-flight calls and exits 0.",
    )
    settings.add_arguments(serve)
    serve.set_defaults(func=_serve)

    demo = sub.add_parser(
        "demo", help="start a local server, load a dataset through the client, search, churn, print tables",
        description="Embedded demo: starts a server on a free local port (no Kafka, no GPU), upserts "
        "../shared/datasets/<dataset> (or generated clustered data with --n) through the gRPC client, measures "
        "recall@10 against exact ground truth, batch QPS and single-query latency, churns the index "
        "(delete / re-insert / refresh) and measures again.",
    )
    d = DemoOptions()
    demo.add_argument("--dataset", default=d.dataset, choices=["sift5k", "glove25", "mnist10k"],
                      help="real dataset to load (checksums verified); default %(default)s")
    demo.add_argument("--n", type=int, default=0,
                      help="instead of a dataset, generate N clustered unit vectors (ground truth by brute force)")
    demo.add_argument("--dim", type=int, default=d.dim, help="dimension of generated data (with --n); default %(default)s")
    demo.add_argument("--M", type=int, default=d.M, help="HNSW degree (level 0 holds 2M); default %(default)s")
    demo.add_argument("--ef-construction", type=int, default=d.ef_construction,
                      help="beam width while inserting; default %(default)s")
    demo.add_argument("--threads", type=int, default=0, help="index worker threads (0 = all cores)")
    demo.add_argument("--churn-rounds", type=int, default=d.churn_rounds, help="rounds of churn; default %(default)s")
    demo.add_argument("--batch", type=int, default=d.batch, help="ids per Upsert/Delete call; default %(default)s")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(func=_demo)

    produce = sub.add_parser(
        "produce", help="push catalog changes (a dataset or a generated churn stream) into a Kafka topic",
        description="Produce CatalogChange messages (key = item id) into a topic, creating it (and <topic>.dlq) "
        "if needed: the rows of a dataset as upserts, or a generated churn stream of inserts, deletes and "
        "refreshes with per-item versions.",
    )
    produce.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka bootstrap servers; default %(default)s")
    produce.add_argument("--topic", default="rtindex.catalog", help="topic; default %(default)s")
    produce.add_argument("--partitions", type=int, default=4, help="partitions when creating the topic; default %(default)s")
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="a .fvecs or .npy file of embeddings (upserted as ids start-id..)")
    source.add_argument("--dataset", choices=["sift5k", "glove25", "mnist10k"], help="a shared dataset's base vectors")
    source.add_argument("--churn", type=int, help="a generated churn stream of this many changes")
    produce.add_argument("--dim", type=int, default=128, help="dimension of generated data (--churn); default %(default)s")
    produce.add_argument("--live", type=int, default=10_000, help="items inserted before the churn starts; default %(default)s")
    produce.add_argument("--start-id", type=int, default=0, help="first id of a dataset's rows; default %(default)s")
    produce.add_argument("--version", type=int, default=1, help="version of a dataset's upserts; default %(default)s")
    produce.add_argument("--rate", type=float, default=0, help="changes per second (0 = as fast as possible)")
    produce.add_argument("--seed", type=int, default=0, help="random seed of the churn stream")
    produce.add_argument("--categories", help="categories of the rows (--file, --dataset): one line per row, "
                         "category ids separated by commas or spaces, blank for none")
    produce.add_argument("--taxonomy", help="child,parent CSV (parent -1: a root) produced first to <topic>.taxonomy")
    produce.set_defaults(func=_produce)

    stats = sub.add_parser("stats", help="print the counters of a running server",
                           description="Ask a running server for its Stats and health.")
    stats.add_argument("--target", default="127.0.0.1:50051", help="server address host:port; default %(default)s")
    stats.add_argument("--timeout", type=float, default=5.0, help="seconds to wait; default %(default)s")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_client_security(stats)
    stats.set_defaults(func=_stats)

    search = sub.add_parser(
        "search", help="search a running server with query vectors from a file or a dataset (optionally by category)",
        description="Send query vectors to a running server and print the best items of each query: "
        "'query N: id:score ...' lines, best first (--json: one JSON object per line). With --categories, the "
        "best items of each category, each its own quota (--k 10, or --k 5,10,3 one per category).",
    )
    search.add_argument("--target", default="127.0.0.1:50051", help="server address host:port; default %(default)s")
    queries = search.add_mutually_exclusive_group(required=True)
    queries.add_argument("--queries", help="a .npy or .fvecs file of query vectors [n, dim]")
    queries.add_argument("--dataset", choices=["sift5k", "glove25", "mnist10k"], help="a shared dataset's queries")
    search.add_argument("--first", type=int, default=0, help="first query row to send; default %(default)s")
    search.add_argument("--limit", type=int, default=10, help="how many query rows to send; default %(default)s")
    search.add_argument("--k", type=_int_list, default=[10],
                        help="results per query, or with --categories per category: one number, or one per "
                        "category (5,10,3); default 10")
    search.add_argument("--ef", type=int, default=0, help="beam width (0 = the server's default)")
    search.add_argument("--categories", type=_int_list, default=None,
                        help="comma-separated category ids: search each of them (an item in a category is also "
                        "in its ancestors)")
    search.add_argument("--timeout", type=float, default=30.0, help="seconds to wait; default %(default)s")
    search.add_argument("--json", action="store_true", help="one JSON object per query (and category) per line")
    _add_client_security(search)
    search.set_defaults(func=_search)

    categories = sub.add_parser(
        "categories", help="set or list the category taxonomy of a running server",
        description="The taxonomy is a forest of category ids: an item in a category is also a member of all "
        "its ancestors. A category never given a parent is a root.",
    )
    cat_sub = categories.add_subparsers(dest="categories_command", required=True)
    cat_set = cat_sub.add_parser(
        "set", help="set the parent of categories (all or nothing)",
        description="Set the parent of each CHILD to PARENT (-1 makes it a root), from arguments and/or a CSV "
        "file of child,parent rows (what `rtindex categories list` prints). The server applies the whole change "
        "or none of it: a cycle, a category given two parents, a negative id or too deep a taxonomy is refused. "
        "The members of a moved category follow at once.",
    )
    cat_set.add_argument("edges", nargs="*", metavar="CHILD:PARENT", help="e.g. 12:3 (12 under 3), 7:-1 (7 a root)")
    cat_set.add_argument("--file", help="CSV of child,parent rows (a child,parent header and # comments are skipped)")
    cat_set.add_argument("--replace", action="store_true",
                         help="make these edges the whole taxonomy: every other category with a parent becomes a root")
    cat_list = cat_sub.add_parser("list", help="print every edge of the taxonomy (child,parent CSV)",
                                  description="Print the taxonomy's edges as child,parent CSV rows (roots are not "
                                  "listed), the format `rtindex categories set --file` reads; --json for JSON.")
    cat_list.add_argument("--json", action="store_true", help="a JSON list of {child, parent} objects")
    for command, func in ((cat_set, _categories_set), (cat_list, _categories_list)):
        command.add_argument("--target", default="127.0.0.1:50051", help="server address host:port; default %(default)s")
        command.add_argument("--timeout", type=float, default=60.0, help="seconds to wait; default %(default)s")
        _add_client_security(command)
        command.set_defaults(func=func)

    snapshot = sub.add_parser("snapshot", help="have a running server write a snapshot to its data directory now",
                              description="Ask a running server (started with --data-dir) to write a RocksDB "
                              "snapshot now; shows progress and prints the snapshot's details.")
    snapshot.add_argument("--target", default="127.0.0.1:50051", help="server address host:port; default %(default)s")
    snapshot.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait; default %(default)s")
    _add_client_security(snapshot)
    snapshot.set_defaults(func=_snapshot)

    restore = sub.add_parser("restore", help="list, verify and load the snapshots of a data directory",
                             description="Inspect a data directory: list its snapshots, verify the newest usable "
                             "one (or --seq N) against its checksums, load it and describe the index. The server "
                             "restores by itself at start-up: rtindex serve --data-dir D.")
    restore.add_argument("--data-dir", required=True, help="the data directory (as given to rtindex serve)")
    restore.add_argument("--seq", type=int, default=0, help="verify this snapshot instead of the newest usable one")
    restore.set_defaults(func=_restore)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
