"""Command line: ``python -m candle_sklearn demo [--seed N]``."""

import argparse

from . import demo


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m candle_sklearn")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="run the offline end-to-end demo")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--plot", default="candle_demo_long_tail.png",
                     help="where to save the long-tail plot ('' for none)")
    run.add_argument("--features", action="store_true",
                     help="the synthetic-features demo instead of the image world")
    args = parser.parse_args(argv)
    verbose = 0 if args.quiet else 1
    if args.features:
        demo.main(seed=args.seed, verbose=verbose)
    else:
        demo.main_world(seed=args.seed, verbose=verbose, plot=args.plot)


if __name__ == "__main__":
    main()
