"""Start-up of the command line: `candle-sklearn --help`, and predicting one image with
a model of the bundled tiny CLIP, as whole processes (what a user waits for).

    .venv/bin/python benchmarks/bench_startup.py [--repeats 5]

Targets (issue 26): `--help` under 0.5 s, a one-image `predict` under 3 s. The model is
fitted once on a generated image folder of four classes (not timed). Medians over
`--repeats` runs go to benchmarks/results/startup.jsonl.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import record  # noqa: E402

CLI = [sys.executable, "-m", "candle_sklearn"]


def _seconds(args, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(CLI + args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _model(folder):
    """A pipeline of the tiny CLIP fitted on four generated classes; one image to predict."""
    from PIL import Image

    from candle_sklearn.cli.folders import fit_image_folder
    from candle_sklearn.datasets import make_world_images

    names = ["solid red circle", "striped blue square", "solid green star",
             "striped yellow cross"]
    images, labels = make_world_images(names, 6, random_state=0)
    for i, (image, label) in enumerate(zip(images, labels)):
        (folder / "train" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "train" / label / f"{i}.png")
    model = folder / "model.safetensors"
    fit_image_folder(folder / "train", model_name="candle-tiny", pretrained="bundled",
                     output=model, device="cpu", num_workers=0,
                     candle_params={"max_epochs": 2}, verbose=0)
    return model, next((folder / "train").rglob("*.png"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, image = _model(Path(tmp))
        rows = {"--help": _seconds(["--help"], args.repeats),
                "predict one image": _seconds(["predict", str(model), str(image), "-q"],
                                              args.repeats)}
    for what, seconds in rows.items():
        record("startup", {"command": what, "seconds": seconds, "repeats": args.repeats})
        print(f"{what}: {seconds:.2f} s (median of {args.repeats})")


if __name__ == "__main__":
    main()
