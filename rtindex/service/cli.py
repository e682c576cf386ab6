"""Command line: ``rtindex serve | demo | produce | stats | snapshot | restore``.
``rtindex <command> --help`` explains every option."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator

from rtindex.service import logs, settings
from rtindex.service.demo import DemoOptions, run_demo


def _serve(args: argparse.Namespace) -> int:
    from rtindex.service.server import IndexServer

    try:
        config = settings.load(args)
    except ValueError as exc:
        print(f"rtindex serve: {exc}", file=sys.stderr)
        return 2
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
        with IndexClient(args.target, timeout=args.timeout) as client:
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
        ensure_topic(args.bootstrap, args.topic, args.partitions)
    except (RuntimeError, Exception) as exc:
        print(f"rtindex produce: {exc}", file=sys.stderr)
        return 1
    producer = CatalogProducer(args.bootstrap, args.topic, rate=args.rate)
    for op, item, version, row in tqdm(changes, total=total, desc=f"produce -> {args.topic}", unit="msg"):
        producer.send_stamped(*encode_body(op, item, version, row))
    producer.flush()
    print(f"produced {producer.sent:,} changes to {args.topic} on {args.bootstrap}")
    return 0


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
                IndexClient(args.target, timeout=args.timeout) as client:
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
                  f"kafka {json.dumps((i.extra.get('kafka') or {}).get('offsets', {}))}")
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
    produce.set_defaults(func=_produce)

    stats = sub.add_parser("stats", help="print the counters of a running server",
                           description="Ask a running server for its Stats and health.")
    stats.add_argument("--target", default="127.0.0.1:50051", help="server address host:port; default %(default)s")
    stats.add_argument("--timeout", type=float, default=5.0, help="seconds to wait; default %(default)s")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(func=_stats)

    snapshot = sub.add_parser("snapshot", help="have a running server write a snapshot to its data directory now",
                              description="Ask a running server (started with --data-dir) to write a RocksDB "
                              "snapshot now; shows progress and prints the snapshot's details.")
    snapshot.add_argument("--target", default="127.0.0.1:50051", help="server address host:port; default %(default)s")
    snapshot.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait; default %(default)s")
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
