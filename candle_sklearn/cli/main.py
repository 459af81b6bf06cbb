"""The ``candle-sklearn`` command line (also ``python -m candle_sklearn``): parsing and
printing only; the work is in :mod:`.folders` (image folders), :mod:`.reproduce` (the
paper's experiments) and :mod:`.demo`."""

import argparse
import ast
import csv
import os
import re
import shlex
import sys
import warnings

DEMO_PLOT = "candle_demo_long_tail.png"
PROG = "candle-sklearn"

DESCRIPTION = """\
Candle (KDD 2024) for scikit-learn: adapt a CLIP model to long-tailed image data with
classes that have few or no images.

Run '%(prog)s COMMAND --help' for a command's options.
Progress goes to stderr, results to stdout or files."""

EXIT_STATUS = """\
exit status:
  0 success; 1 a bad input (missing folder or file, empty class folder, unknown dataset,
  unreadable image, ...), reported in one line that names it; 2 a usage error;
  130 interrupted."""

MAIN_EPILOG = f"""\
examples:
  %(prog)s fit photos/train --new-classes unseen.txt -o pets.safetensors
  %(prog)s predict pets.safetensors photos/inbox -o predictions.csv
  %(prog)s evaluate pets.safetensors photos/test --plot long_tail.png
  %(prog)s reproduce --dataset oxford_pets --root ~/data --output pets_results
  %(prog)s demo

environment:
  HF_HUB_OFFLINE=1        never download weights: use the local cache or --pretrained FILE
  CANDLE_SKLEARN_DEBUG=1  show the traceback of a failure instead of the one-line message
  CANDLE_SKLEARN_MEMORY_CACHE_MB  MiB of embeddings kept in memory (default 4096)

{EXIT_STATUS}

See docs/reproducing.md for the dataset layouts and the paper's settings."""

FIT_EPILOG = """\
layout of TRAIN_DIR (as torchvision's ImageFolder):
  TRAIN_DIR/golden_retriever/001.jpg    one sub-folder per class; the folder name is
  TRAIN_DIR/golden_retriever/002.jpg    the label, and with underscores as spaces the
  TRAIN_DIR/tabby_cat/001.png           name in the prompt ("a photo of a tabby cat.")
Hidden files and folders are skipped; extensions: jpg jpeg png ppm bmp pgm tif tiff webp.

examples:
  %(prog)s photos/train -o pets.safetensors
  %(prog)s photos/train --new-classes unseen.txt \\
      --model ViT-B-16 --pretrained openai --cache-dir ~/.cache/candle -o pets.safetensors
  %(prog)s photos/train --param tau=1.5 --max-epochs 20 -o pets.safetensors

""" + EXIT_STATUS

PREDICT_EPILOG = """\
output: CSV with the columns path, label, then class_1, proba_1, ... class_K, proba_K
(the K most probable classes, K = --top-k); to stdout unless -o is given.

examples:
  %(prog)s pets.safetensors photos/test -o predictions.csv
  %(prog)s pets.safetensors 'inbox/**/*.jpg' one.png --top-k 3

""" + EXIT_STATUS

EVALUATE_EPILOG = """\
Prints base / new / HM (reference protocol: new-class images among new classes only,
uncalibrated scores), joint HM (every image among all classes) and many / medium / few
(base classes with >100, 20-100, <20 training images) for Candle and CLIP zero-shot,
then the per-class table (joint prediction). TEST_DIR has the layout of fit's TRAIN_DIR;
its folders must be classes of the model.

examples:
  %(prog)s pets.safetensors photos/test --plot long_tail.png \\
      -o per_class.csv

""" + EXIT_STATUS

REPRODUCE_EPILOG = """\
datasets (CoOp layout under --root, see docs/reproducing.md):
  imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft
  sun397 dtd eurosat ucf101; transfer targets also: imagenetv2 imagenet_sketch
  imagenet_a imagenet_r

settings:
  long-tailed (default)  --shots 100 --imbalance-ratio 0.02 (0.01 for imagenet)
  balanced               --shots 16 --imbalance-ratio 1
  base = the first ceil(n/2) labels, new = the rest; seeds 1 2 3.

output (in --output; the tables also go to stdout, progress to stderr):
  results.csv   one row per (dataset, method, seed): base, new, hm, joint_hm, many,
                medium, few, seconds; methods candle, zero-shot, linear-probe
                (transfer: source, target, method, seed, accuracy)
  summary.csv   mean and std over seeds; with --dataset all, the average over datasets
                (transfer: per target, and the average over the targets)
  report.txt    the printed tables; run.json: the settings
  cache/        the embedding cache (unless --cache-dir): a second run embeds nothing

examples:
  %(prog)s --dataset oxford_pets --root ~/data \\
      --model ViT-B-16 --pretrained openai
  %(prog)s --dataset all --root ~/data \\
      --shots 16 --imbalance-ratio 1 --output balanced
  %(prog)s --train imagenet --root ~/data \\
      --test imagenetv2 imagenet_sketch imagenet_a imagenet_r
  %(prog)s --dataset dtd --root ~/data --recipe reference

""" + EXIT_STATUS


DEMO_EPILOG = """\
examples:
  %(prog)s
  %(prog)s --seed 1 --plot ''

""" + EXIT_STATUS


def _wrap(text):
    """A paragraph for a raw-formatted help text, wrapped at 88 columns."""
    import textwrap

    return textwrap.fill(text, 88)


def _param(text):
    """``NAME=VALUE`` with VALUE a Python literal (else a string)."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass
    return name, value


def _ratio(text):
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def _add_model_options(p, model_default="ViT-B-16", pretrained_default="openai"):
    g = p.add_argument_group("model")
    g.add_argument("--model", default=model_default, metavar="NAME",
                   help="open_clip model name (default: %(default)s; candle-tiny is the "
                        "bundled tiny CLIP)")
    g.add_argument("--pretrained", default=pretrained_default, metavar="TAG",
                   help="weights: an open_clip tag, a checkpoint file, local-dir:FOLDER or "
                        "bundled (default: %(default)s)")
    _add_run_options(g)


def _add_run_options(g):
    g.add_argument("--device", default="auto",
                   help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    g.add_argument("--batch-size", type=_positive, default=64, metavar="N",
                   help="images per forward pass (default: %(default)s)")
    g.add_argument("--num-workers", type=_non_negative, default=2, metavar="N",
                   help="threads that decode images while the model runs (default: "
                        "%(default)s)")


def _add_common(p):
    p.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                   help="an unreadable image stops the run (default) or is skipped with a "
                        "warning")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--threads", type=_positive, metavar="N",
                   help="at most N CPU threads for the model and the classifier (default: "
                        "one per core; fewer where other processes keep cores busy)")


def _add_load_options(p):
    p.add_argument("--device", help="override the saved pipeline's device")
    p.add_argument("--pretrained", metavar="TAG",
                   help="where the CLIP weights are on this machine (a checkpoint file, "
                        "local-dir:FOLDER, an open_clip tag or bundled), where they are not "
                        "where fit found them; they must be the same weights")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="the on-disk embedding cache to use (default: the one fit used, "
                        "where it exists; else a cache in memory)")


def _add_candle_options(p):
    g = p.add_argument_group("Candle")
    g.add_argument("--max-epochs", type=_positive, metavar="N",
                   help="training epochs (default: the classifier's, 20 epochs of at "
                        "most 200 steps in all)")
    g.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                   help="any CandleClassifier parameter, e.g. tau=1.5 or lr=3e-4 "
                        "(repeatable)")


def build_parser(prog=PROG):
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, formatter_class=fmt,
                                     epilog=MAIN_EPILOG)
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")

    p = sub.add_parser("fit", help="fit a pipeline on an image folder (+ names of classes "
                       "without images)", formatter_class=fmt,
                       description=_wrap(
                           "Fit ClipEmbedder + CandleClassifier on the images of TRAIN_DIR "
                           "(one sub-folder per class) and on the names of classes without "
                           "images (--new-classes), and save the fitted pipeline to MODEL. "
                           "Every image is embedded once by the CLIP model; Candle then "
                           "trains on the embeddings."), epilog=FIT_EPILOG)
    p.add_argument("train_dir", metavar="TRAIN_DIR", help="one sub-folder of images per class")
    p.add_argument("--new-classes", metavar="FILE",
                   help="text file of classes without images, one name per line (lines "
                        "starting with '#' are comments)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="where to save the fitted pipeline (candle_sklearn.save's safe "
                        "format: safetensors + JSON, no pickle; CLIP weights by reference)")
    p.add_argument("--template", action="append", metavar="TEMPLATE",
                   help="prompt with {} for the class name, or a preset (openai_imagenet, "
                        "simple_imagenet, or a reference dataset's name such as "
                        "oxford_pets); repeat to average several (default: 'a photo of a "
                        "{}.')")
    p.add_argument("--cache-dir", metavar="DIR", help="on-disk embedding cache")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_model_options(p)
    _add_candle_options(p)
    _add_common(p)
    p.set_defaults(func=_fit)

    p = sub.add_parser("predict", help="predict images with a saved pipeline",
                       formatter_class=fmt, epilog=PREDICT_EPILOG,
                       description=_wrap(
                           "Predict the class of image files, folders (recursively) and "
                           "glob patterns (quote them: '**' matches sub-folders) with a "
                           "pipeline saved by fit, and write one CSV row per image."))
    p.add_argument("model", metavar="MODEL", help="a pipeline saved by fit")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob")
    p.add_argument("-o", "--output", metavar="CSV", help="write the CSV here (default: stdout)")
    p.add_argument("--top-k", type=_positive, default=5, metavar="K",
                   help="most probable classes listed per image (default: %(default)s)")
    _add_load_options(p)
    _add_common(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser("evaluate", help="per-class accuracy and long-tail plot on a test "
                       "folder", formatter_class=fmt, epilog=EVALUATE_EPILOG,
                       description=_wrap(
                           "Evaluate a pipeline saved by fit on TEST_DIR (one sub-folder per "
                           "class): the summary table, the per-class table and the long-tail "
                           "plot."))
    p.add_argument("model", metavar="MODEL", help="a pipeline saved by fit")
    p.add_argument("test_dir", metavar="TEST_DIR", help="one sub-folder of images per class")
    p.add_argument("--plot", metavar="FILE",
                   help="save the long-tail plot here (PNG; needs matplotlib; default: none)")
    p.add_argument("-o", "--output", metavar="CSV", help="write the per-class table as CSV")
    _add_load_options(p)
    _add_common(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("reproduce", help="the paper's settings on CoOp-layout datasets "
                       "(base to new, transfer)",
                       formatter_class=fmt, epilog=REPRODUCE_EPILOG,
                       description=_wrap(
                           "Run a setting of the paper on datasets in the CoOp layout: "
                           "base-to-new generalisation (--dataset) or transfer (--train with "
                           "--test). Every image is embedded once through an on-disk cache; "
                           "for each seed, Candle, CLIP zero-shot, a linear probe and the "
                           "peers (--methods) are fitted and scored, per seed and as mean ± "
                           "std."))
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", metavar="NAME",
                      help="base-to-new on one dataset, or 'all' found under --root")
    what.add_argument("--train", metavar="NAME",
                      help="transfer: fit on NAME (every class), test on --test")
    p.add_argument("--test", nargs="+", default=[], metavar="NAME",
                   help="transfer targets (ImageNet variants: domain generalisation; other "
                        "datasets: cross-dataset, their classes as new classes)")
    p.add_argument("--root", required=True, metavar="DATA",
                   help="the folder holding the datasets (CoOp's $DATA)")
    p.add_argument("--shots", type=_positive, default=100, metavar="N",
                   help="at most this many training images per class (default: %(default)s; "
                        "16 for the balanced setting)")
    p.add_argument("--imbalance-ratio", type=_ratio, metavar="R",
                   help="long-tail ratio (default: 0.02, 0.01 for imagenet; 1 = balanced)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], metavar="SEED",
                   help="one split and fit per seed; the same seed draws the same split "
                        "(default: 1 2 3)")
    p.add_argument("--output", default="candle_reproduce", metavar="DIR",
                   help="results folder (default: %(default)s)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="embedding cache (default: DIR/cache); share it between runs")
    p.add_argument("--recipe", choices=("default", "reference"), default="default",
                   help="Candle's training: the package defaults, or the reference's "
                        "(SGD, 50 epochs, batch 128, ...)")
    p.add_argument("--methods", nargs="+", metavar="METHOD",
                   help="methods to run, among candle, zero-shot, linear-probe, "
                        "linear-adapter, clap, gda, tip-adapter, tip-adapter-f, cross-modal "
                        "and lift (default: all)")
    _add_model_options(p)
    _add_candle_options(p)
    _add_common(p)
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("demo", help="run the offline end-to-end demo", formatter_class=fmt,
                       description=_wrap(
                           "Candle against CLIP zero-shot and a linear probe on the generated "
                           "image world, with the bundled tiny CLIP: no download, no data. "
                           "Prints the results table and saves the long-tail "
                           "plot."), epilog=DEMO_EPILOG)
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--plot", metavar="FILE",
                   help="where to save the long-tail plot ('' for none; default: "
                        f"{DEMO_PLOT}; not with --features, which makes none)")
    p.add_argument("--features", action="store_true",
                   help="the synthetic-features demo instead of the image world")
    p.set_defaults(func=_demo)
    return parser


# ------------------------------------------------------------------ commands
def _verbose(args):
    return 0 if args.quiet else 1


def _candle_params(args, recipe=None):
    params = dict(recipe or {})
    if args.max_epochs is not None:
        params["max_epochs"] = args.max_epochs
    params.update(args.param)
    return params


def _fit(args):
    from .folders import fit_image_folder

    fit_image_folder(args.train_dir, new_classes=args.new_classes or (),
                     model_name=args.model, pretrained=args.pretrained,
                     templates=args.template, output=args.output, cache_dir=args.cache_dir,
                     device=args.device, batch_size=args.batch_size,
                     num_workers=args.num_workers, on_error=args.on_error,
                     random_state=args.seed, candle_params=_candle_params(args),
                     verbose=_verbose(args))
    _log(args, f"saved the fitted pipeline to {args.output}")


def _load(args):
    from .folders import load_model

    return load_model(args.model, device=args.device, pretrained=args.pretrained,
                      cache_dir=args.cache_dir)


def _predict(args):
    from .folders import predict_images, prediction_fields

    model = _load(args)
    _output_file(args.output)
    rows = predict_images(model, args.inputs, top_k=args.top_k, on_error=args.on_error,
                          verbose=_verbose(args))
    fields = prediction_fields(args.top_k, len(model.classes_))
    # a file name that is not UTF-8 (its bytes kept as surrogates) is written back as
    # the same bytes, not an error after every image was embedded
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8",
                  errors="surrogateescape") as f:
            _write_rows(f, rows, fields)
        _log(args, f"wrote {len(rows)} predictions to {args.output}")
    else:
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors="surrogateescape")
        _write_rows(sys.stdout, rows, fields)


def _write_rows(f, rows, fields):
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()})


def _evaluate(args):
    from .folders import evaluate_image_folder, per_class_table
    from .tables import format_table

    model = _load(args)
    _output_file(args.output)
    plot = _output_file(args.plot) if args.plot else None
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _log(args, "matplotlib is not installed: no long-tail plot "
                       "(pip install candle-sklearn[demo])", force=True)
            plot = None
    result = evaluate_image_folder(model, args.test_dir, on_error=args.on_error, plot=plot,
                                   verbose=_verbose(args))
    print(format_table(result.summary, [c for c in ("base", "new", "hm", "joint_hm", "many",
                                                     "medium", "few")]))
    print("\n" + EVALUATE_LEGEND + "\n")
    print(per_class_table(result.per_class, result.methods))
    if args.output:
        from .tables import write_csv

        write_csv(args.output, result.per_class,
                  ["class", "kind", "n_train", "n_test", *result.methods])
        _log(args, f"wrote the per-class table to {args.output}")
    if result.plot:
        _log(args, f"long-tail plot: {result.plot}")


EVALUATE_LEGEND = """\
base/new/hm: reference protocol (new-class images scored among new classes, uncalibrated
scores); joint_hm: every image among all classes; many/medium/few: base classes with >100,
20-100, <20 training images; '--': no test image of that kind. Per class: accuracy of the
joint prediction (what predict returns)."""


def _reproduce(args):
    from ..classifier import REFERENCE_RECIPE
    from .reproduce import reproduce

    recipe = REFERENCE_RECIPE if args.recipe == "reference" else None
    report = reproduce(args.dataset, args.root, train=args.train, test=args.test,
                       output=args.output, cache_dir=args.cache_dir, seeds=args.seeds,
                       verbose=_verbose(args), model_name=args.model,
                       pretrained=args.pretrained, shots=args.shots,
                       imbalance_ratio=args.imbalance_ratio, device=args.device,
                       batch_size=args.batch_size, num_workers=args.num_workers,
                       candle_params=_candle_params(args, recipe), on_error=args.on_error,
                       methods=args.methods)
    print(report)
    _log(args, f"results: {os.path.join(args.output, 'results.csv')}")


def _demo(args):
    from . import demo

    verbose = 0 if args.quiet else 1
    if args.features:
        demo.main(seed=args.seed, verbose=verbose)
    else:
        demo.main_world(seed=args.seed, verbose=verbose,
                        plot=DEMO_PLOT if args.plot is None else args.plot)


# ------------------------------------------------------------------ entry point
def _log(args, message, force=False):
    if force or not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _prog():
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else PROG
    return "python -m candle_sklearn" if name in ("__main__.py", "-m", "-c", "") else name


def _expected_errors():
    """Errors that mean a bad input (reported in one line), not a bug."""
    from ..exceptions import (CheckpointError, DatasetError, EmbeddingCacheError, ImageInputError,
                              InvalidModelFileError, ModelFileError, TrainingDivergedError,
                              WeightsMismatchError, WeightsUnavailableError)

    return (DatasetError, ModelFileError, ImageInputError, InvalidModelFileError,
            WeightsMismatchError, WeightsUnavailableError, CheckpointError,
            EmbeddingCacheError, TrainingDivergedError, OSError, ValueError)


# The library's errors give Python advice (ClipEmbedder(pretrained=...)); on the command
# line the same advice names the flags. A keyword counts only where advice starts (after
# a space, an opening parenthesis or the start), never inside a path or a quoted value.
_WORD = r"(?:(?<=[\s(])|^)"
_VALUE = r"(?:'([^']*)'|([^\s',;)]+))"


def _flag(name, end=""):
    """A substitution that writes ``name VALUE`` (quoted as a shell would need it)."""
    def write(match):
        value = match.group(1) if match.group(1) is not None else match.group(2)
        return f"{name} {shlex.quote(value)}{end}"
    return write


_AS_FLAGS = (
    (re.compile(_WORD + r"ClipEmbedder\(model_name=" + _VALUE + r", ?"), _flag("--model", " ")),
    (re.compile(_WORD + r"pretrained=None (?:means|gives) random weights[^.;]*[.;]?"), ""),
    (re.compile(_WORD + r"pretrained=" + _VALUE + r"\)?"), _flag("--pretrained")),
    (re.compile(_WORD + r"device=" + _VALUE), _flag("--device")),
    (re.compile(_WORD + r"cache=True"), "no --cache-dir"),
    (re.compile(_WORD + r"cache=(?=[\s,;.]|$)"), "--cache-dir"),
)


def _as_flags(text):
    for pattern, flags in _AS_FLAGS:
        text = pattern.sub(flags, text)
    return text


def _one_line(exc):
    """The message of ``exc`` on one line, in the command line's words; a system error
    names its file first."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = _as_flags(str(exc).split("\n")[0])
    return " ".join(text.split()).rstrip(" ;") or type(exc).__name__


def _output_file(path):
    """``path`` after creating its folder: a file the command will write."""
    if path:
        folder = os.path.dirname(os.path.abspath(os.path.expanduser(path)))
        os.makedirs(folder, exist_ok=True)
    return path


def _check_output_file(parser, option, path):
    """A file the command will write: not empty, not a folder (checked before any work)."""
    if path is None:
        return
    if not str(path).strip():
        parser.error(f"{option}: give a file name (got an empty one)")
    if os.path.isdir(os.path.expanduser(path)):
        parser.error(f"{option}: {path} is a folder; give a file name, for instance "
                     f"{os.path.join(path, 'model.safetensors' if option == '-o' else 'out')}")


def _check_usage(parser, args):
    """Usage errors that argparse cannot see option by option: exit status 2."""
    if getattr(args, "func", None) in (_fit, _predict, _evaluate):
        _check_output_file(parser, "-o", getattr(args, "output", None))
    if getattr(args, "func", None) is _evaluate and args.plot != "":  # '': none, as before
        _check_output_file(parser, "--plot", args.plot)
    if getattr(args, "dataset", None) and getattr(args, "test", None):
        parser.error("--test goes with --train (transfer), not with --dataset")
    if getattr(args, "features", False) and args.plot is not None:
        parser.error("--plot: the --features demo makes no plot")
    if getattr(args, "methods", None):
        from .reproduce import check_methods

        try:
            check_methods(args.methods)
        except ValueError as exc:
            parser.error(f"--methods: {exc}")
    if getattr(args, "param", None):
        from .folders import check_candle_params

        try:
            check_candle_params(dict(args.param))
        except ValueError as exc:
            parser.error(str(exc))


def _run(args):
    """The command, with torch's thread count set by ``--threads`` for its length."""
    if getattr(args, "threads", None) is None:
        return args.func(args)  # torch is imported only by commands that need it
    from .._threads import torch_threads

    with torch_threads(args.threads):
        return args.func(args)


def main(argv=None):
    """Run the command line; returns the exit status."""
    prog = _prog()
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _check_usage(parser, args)
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, category, *a, **k: print(
            f"{prog}: warning: {message}", file=sys.stderr, flush=True)
        try:
            _run(args)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except _expected_errors() as exc:
            if os.environ.get("CANDLE_SKLEARN_DEBUG"):
                raise
            print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
            return 1
    return 0


def run():
    """Console-script entry point."""
    sys.exit(main())
