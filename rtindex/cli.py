"""Command line: ``rtindex demo`` (more subcommands arrive with the server, Kafka and
snapshot issues)."""

from __future__ import annotations

import argparse
import sys

from rtindex.demo import DemoOptions, run_demo


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="build, search and churn an index on a real dataset, print recall and throughput",
        description="Embedded demo: builds an index on ../shared/datasets/<dataset> (or generated "
        "clustered data with --n), measures recall@10 against exact ground truth, QPS and "
        "latency, churns the index (delete/re-insert/refresh) and measures again.",
    )
    defaults = DemoOptions()
    p.add_argument("--dataset", default=defaults.dataset, choices=["sift5k", "glove25", "mnist10k"],
                   help="real dataset to load (checksums verified); default %(default)s")
    p.add_argument("--n", type=int, default=0,
                   help="instead of a dataset, generate N clustered unit vectors (ground truth by brute force)")
    p.add_argument("--dim", type=int, default=defaults.dim, help="dimension of generated data (with --n)")
    p.add_argument("--M", type=int, default=defaults.M, help="HNSW degree (level 0 holds 2M); default %(default)s")
    p.add_argument("--ef-construction", type=int, default=defaults.ef_construction,
                   help="beam width while inserting; default %(default)s")
    p.add_argument("--threads", type=int, default=0, help="worker threads (0 = all cores)")
    p.add_argument("--churn-rounds", type=int, default=defaults.churn_rounds, help="rounds of churn; default %(default)s")
    p.add_argument("--seed", type=int, default=0, help="random seed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtindex", description="rtindex: real-time incremental vector index")
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        run_demo(DemoOptions(
            dataset=args.dataset, n=args.n, dim=args.dim, M=args.M, ef_construction=args.ef_construction,
            threads=args.threads, churn_rounds=args.churn_rounds, seed=args.seed,
        ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
