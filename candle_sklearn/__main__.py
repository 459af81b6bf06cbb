"""Command line: ``python -m candle_sklearn demo [--seed N]``."""

import argparse

from . import demo


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m candle_sklearn")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="run the offline end-to-end demo")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo.main(seed=args.seed, verbose=0 if args.quiet else 1)


if __name__ == "__main__":
    main()
