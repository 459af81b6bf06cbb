"""Choose CandleClassifier's training defaults over a family of worlds, by regret.

    .venv/bin/python benchmarks/bench_defaults.py sweep [--seeds 0 1] [--jobs 2]
    .venv/bin/python benchmarks/bench_defaults.py report [--markdown]

`sweep` fits every configuration of CONFIGS (lr 1e-3, batch 128 unless named) on every
world of benchmarks/worlds.py
(`new_class_bias=0.0`, reference-protocol HM on the head's own scores) and appends one
JSON line per (world, seed, configuration) to benchmarks/results/defaults.jsonl; a rerun
skips what is there, so it can be stopped and resumed. Each worker runs torch on one
thread. `report` prints, per world, the best configuration's HM and every
configuration's regret (best HM of that world minus its HM, mean over seeds), then the
mean regret of each configuration over the family: the default is the configuration
with the smallest mean regret.
"""

import argparse
import functools
import json
import os
import time
from pathlib import Path

import numpy as np

from worlds import HOLDOUT, LARGE, RESULTS, SPECS, VALIDATION, WORLDS, load_world

LOG = RESULTS / "defaults.jsonl"


def _configs():
    grid = {}

    def add(name, **params):
        grid[name] = dict(lr=1e-3, batch_size=128, max_steps=None, max_epochs=None) | params

    for steps in (25, 50, 100, 200, 400, 800, 1600):
        add(f"s{steps}", max_steps=steps)
    for epochs in (10, 30, 100):  # epoch rules, capped at 1,000 steps
        add(f"e{epochs}-cap1000", max_epochs=epochs, max_steps=1000)
    for batch in (64, 256):
        add(f"s400-b{batch}", max_steps=400, batch_size=batch)
    for steps in (200, 800):
        add(f"s{steps}-lr3e-4", max_steps=steps, lr=3e-4)
    for steps in (100, 400):
        add(f"s{steps}-lr3e-3", max_steps=steps, lr=3e-3)
    add("0.1.0 default (10 epochs, batch 512)", max_epochs=10, batch_size=512)
    # epoch rules at both learning rates: the cost limit (half the reference recipe's
    # 50 epochs, calibration included) caps small data at a few epochs
    for lr in (3e-4, 1e-3):
        for epochs in (5, 10, 20):
            for cap in (400, 1000):
                add(f"e{epochs}-cap{cap}-lr{lr:g}", max_epochs=epochs, max_steps=cap, lr=lr)
    add("e30-cap1000-lr0.001", max_epochs=30, max_steps=1000)
    for lr in (3e-4, 1e-3):
        add(f"e20-cap200-lr{lr:g}", max_epochs=20, max_steps=200, lr=lr)
    add("auto lr, e20-cap200 (0.2.0 default)", max_epochs=20, max_steps=200, lr="auto")
    # budgets in steps, or epochs with a floor of steps, at the automatic lr (whose
    # smaller steps for little data may let small data sets train longer)
    for steps in (100, 200, 400):
        add(f"auto lr, s{steps}", max_steps=steps, lr="auto")
    for floor in (50, 100):
        add(f"auto lr, e20-cap200-min{floor}", max_epochs=20, max_steps=200, min_steps=floor,
            lr="auto")
    add("auto lr, e40-cap400", max_epochs=40, max_steps=400, lr="auto")
    for lr_floor in (0.03, 0.1):  # smaller steps still for the fewest images
        add(f"auto lr floor{lr_floor:g}, e20-cap200", max_epochs=20, max_steps=200,
            lr="auto", lr_floor=lr_floor)
    # one smooth rule instead of a floor: the data factor sqrt(n / 1000) (0.1 at ten
    # images, 0.3 at 90, 1 from 1,000), and the default's ramp to 0.3 below 90 images
    add("auto lr sqrt, e20-cap200", max_epochs=20, max_steps=200, lr="auto", lr_rule="sqrt")
    add(DEFAULT, max_epochs=20, max_steps=200, lr="auto", lr_rule="ramp90")
    add("e40-cap1000-b256-lr0.001", max_epochs=40, max_steps=1000, batch_size=256)
    add("s1600-lr3e-4", max_steps=1600, lr=3e-4)
    for steps in (800, 1600):
        add(f"s{steps}-lr1e-4", max_steps=steps, lr=1e-4)
    add("reference recipe", optimizer="sgd", lr=3e-4, momentum=0.9, weight_decay=5e-4,
        max_epochs=50, warmup_epochs=1, warmup_lr=1e-5, dropout=0.1, context="batch")
    for params in grid.values():  # the automatic lr of the grid's first runs: floor 0.3
        if params["lr"] == "auto" and "lr_rule" not in params:
            params.setdefault("lr_floor", 0.3)
    return grid


# the default (auto_lr's ramp below 90 images) and the one before it (a floor of 0.3x)
DEFAULT = "auto lr ramp90, e20-cap200 (default)"
PREVIOUS = "auto lr, e20-cap200 (0.2.0 default)"
CONFIGS = _configs()
# The grid a sweep runs by default: epoch rules with step caps at two learning rates, the
# long schedules (800 steps) that show each world's plateau, and the three defaults. The
# rest of CONFIGS were explored on a few worlds first (steps alone overfit the few-shot
# worlds, batch 256 and lr 1e-4 and 3e-3 lost there) and stay reportable.
CANDIDATES = [c for c in CONFIGS if c.startswith("e") and "-lr" in c and "b256" not in c] + [
    "s800-lr3e-4", "s800", "0.1.0 default (10 epochs, batch 512)", PREVIOUS, DEFAULT]
# the large world (seconds per step): short schedules at both learning rates, one long
# one (1,000 steps) for its plateau, and the defaults
LARGE_CONFIGS = ["e5-cap400-lr0.0003", "e5-cap400-lr0.001", "e20-cap1000-lr0.001",
                 "0.1.0 default (10 epochs, batch 512)", PREVIOUS, DEFAULT]


@functools.lru_cache(maxsize=2)
def _world(name, seed):
    return load_world(name, seed)


def run_one(world, seed, config):
    """Fit one configuration on one world; the reference-protocol scores and costs."""
    import torch

    from candle_sklearn import CandleClassifier
    from candle_sklearn.metrics import base_new_accuracy

    torch.set_num_threads(1)
    data = _world(world, seed)
    clf = CandleClassifier(classes=data.classes, text_features=data.text_features,
                           new_class_bias=0.0, random_state=seed, device="cpu",
                           **_params(world, config))
    cpu, wall = time.process_time(), time.perf_counter()
    clf.fit(data.X_train, data.y_train)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    scores = clf.predict_proba(data.X_test, calibrated=False)
    acc = base_new_accuracy(data.y_test, scores, clf.classes_, clf.new_classes_)
    return dict(world=world, seed=seed, config=config, n_train=len(data.y_train),
                n_classes=len(data.classes), fit_cpu_s=cpu, fit_wall_s=wall, **acc)


def _params(world, config):
    """The configuration's CandleClassifier parameters on this world. Rules that
    CandleClassifier does not have become plain values: another data factor of the
    automatic lr (`lr_floor`: clip(n / 1000, floor, 1), the rule before this default;
    `lr_rule`: "sqrt" or "ramp90", the default's) becomes the lr ("auto" where it is the
    same), and a floor of `min_steps` becomes a step count."""
    from candle_sklearn._train import TrainConfig

    params = dict(CONFIGS[config])
    lr_floor, rule = params.pop("lr_floor", None), params.pop("lr_rule", None)
    if lr_floor is not None or rule is not None:  # another data factor for little data
        from candle_sklearn._train import auto_lr

        n, dim = _shape(world)
        factor = {None: max(n / 1000, lr_floor or 0), "sqrt": np.sqrt(n / 1000),
                  "ramp90": max(n / 1000, min(0.3, n / 300))}[rule]
        lr = 1e-3 * min(1.0, 512 / dim) * min(1.0, factor)
        params["lr"] = "auto" if lr == auto_lr(n, dim) else lr
    floor = params.pop("min_steps", None)
    if floor is not None:
        steps = TrainConfig(max_steps=params["max_steps"], max_epochs=params["max_epochs"],
                            batch_size=params["batch_size"]).total_steps(_n_train(world))
        params.update(max_steps=max(floor, steps), max_epochs=None)
    return params


def signature(world, config):
    """What decides a fit, given the world's size: configurations that differ only in
    how they state the same number of steps train identically and are run once."""
    from candle_sklearn._train import TrainConfig

    params = _params(world, config)
    n = _n_train(world)
    steps = TrainConfig(max_steps=params.pop("max_steps"), max_epochs=params.pop("max_epochs"),
                        batch_size=params["batch_size"]).total_steps(n)
    if "warmup_epochs" in params:  # the reference recipe's schedule is stated in epochs
        return config
    return json.dumps({**params, "steps": steps}, sort_keys=True)


@functools.lru_cache(maxsize=None)
def _shape(world):
    return load_world(world, 0).X_train.shape


def _n_train(world):
    return _shape(world)[0]


def done():
    if not LOG.exists():
        return set()
    return {(r["world"], r["seed"], r["config"]) for r in map(json.loads, LOG.open())}


def sweep(seeds, jobs, worlds, configs):
    """Fit `configs` (or, where None, every configuration that a world already has in the
    log: new seeds for an existing sweep) on `worlds` x `seeds`."""
    from joblib import Parallel, delayed

    import bench_defaults  # by reference, so that workers import it rather than unpickle

    # worker processes import `worlds` from this folder
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                            os.environ.get("PYTHONPATH")]))
    have = done()
    if configs is None:
        configs = {w: sorted({c for (world, _, c) in have if world == w}) for w in worlds}
        if missing := [w for w in worlds if not configs[w]]:
            print(f"--same-configs: no rows yet for {missing}; nothing to add there")
    else:
        configs = {w: LARGE_CONFIGS if w in LARGE else configs for w in worlds}
    todo = [(w, s, c) for w in worlds for s in (seeds[:1] if w in LARGE else seeds)
            for c in configs[w] if (w, s, c) not in have]
    todo.sort(key=lambda t: (t[0] in LARGE, t[1], t[0]))  # small worlds first
    # one fit per distinct training run; its row is copied to the equivalent configurations
    runs, same = {}, {}
    rows = [json.loads(line) for line in LOG.open()] if LOG.exists() else []
    known = {(r["world"], r["seed"], signature(r["world"], r["config"])): r for r in rows}
    copies = []
    for w, s, c in todo:
        key = (w, s, signature(w, c))
        if key in known:
            copies.append({**known[key], "config": c})
        else:
            runs.setdefault(key, (w, s, c))
            same.setdefault(key, []).append(c)
    print(f"{len(todo)} results to add ({len(have)} already in {LOG}): {len(copies)} from "
          f"equivalent runs, {len(runs)} fits to run")
    RESULTS.mkdir(exist_ok=True)
    with LOG.open("a") as log:
        for row in copies:
            log.write(json.dumps(row) + "\n")
        results = Parallel(n_jobs=jobs, return_as="generator_unordered")(
            delayed(bench_defaults.run_one)(*t) for t in runs.values())
        for i, row in enumerate(results, 1):
            key = (row["world"], row["seed"], signature(row["world"], row["config"]))
            for config in same[key]:
                log.write(json.dumps({**row, "config": config}) + "\n")
            log.flush()
            print(f"[{i}/{len(runs)}] {row['world']} seed {row['seed']} {row['config']}"
                  f" (= {len(same[key])} configurations): hm {row['hm']:.3f} "
                  f"({row['fit_cpu_s']:.1f} s cpu)", flush=True)


def _by_seed(rows, seeds=None):
    """{world: {config: {seed: HM}}} restricted, per world, to the seeds that every
    configuration of that world has."""
    by = {}
    for r in rows:
        if seeds is None or r["seed"] in seeds:
            by.setdefault(r["world"], {}).setdefault(r["config"], {})[r["seed"]] = r["hm"]
    out = {}
    for world, per_config in by.items():
        common = sorted(set.intersection(*(set(v) for v in per_config.values())))
        if common:
            out[world] = {c: {s: v[s] for s in common} for c, v in per_config.items()}
    return out


def regret_table(rows, seeds=None):
    """{world: {config: mean HM}} over the seeds that every configuration of that world
    has, and {config: regret per world}."""
    hm = {w: {c: float(np.mean(list(v.values()))) for c, v in per.items()}
          for w, per in _by_seed(rows, seeds).items()}
    regret = {c: {w: max(hm[w].values()) - hm[w][c] for w in hm if c in hm[w]}
              for c in CONFIGS}
    return hm, regret


def held_out_regret(rows):
    """{config: {world: regret}} without the winner's curse: for each seed, the best
    configuration is chosen on the world's other seeds and both are scored on this one
    (mean over seeds). The in-sample regret of `regret_table` measures against the
    maximum of many noisy means, which is biased upwards by their noise; this one can
    be negative. Worlds with a single seed are left out."""
    out = {c: {} for c in CONFIGS}
    for world, per in _by_seed(rows).items():
        seeds = list(next(iter(per.values())))
        if len(seeds) < 2:
            continue
        for c in per:
            losses = []
            for s in seeds:
                others = [t for t in seeds if t != s]
                best = max(per, key=lambda b: np.mean([per[b][t] for t in others]))
                losses.append(per[best][s] - per[c][s])
            out[c][world] = float(np.mean(losses))
    return out


def report(markdown, configs=None, worlds=WORLDS, seeds=None):
    """The regret table: every configuration's mean regret over the worlds where it ran
    (ranked over the worlds where every listed configuration ran, when there are any),
    on `seeds` (default: every seed that all configurations of a world have)."""
    rows = [r for r in map(json.loads, LOG.open())
            if r["world"] in worlds and (seeds is None or r["seed"] in seeds)]
    hm, regret = regret_table(rows)
    configs = [c for c in (configs or CONFIGS) if regret.get(c)]
    full = [w for w in hm if all(c in hm[w] for c in configs)]
    basis = full or list(hm)
    mean = {c: float(np.mean([regret[c][w] for w in basis if w in regret[c]]))
            for c in configs}
    ranked = sorted(mean, key=mean.get)
    print(f"worlds with every configuration: {len(full)} of {len(hm)}\n")
    sep = " | " if markdown else "  "
    held = held_out_regret(rows)
    multi = [w for w in basis if any(w in held[c] for c in configs)]
    print(sep.join(["configuration", "worlds", "mean regret", "max regret", "worst world",
                    f"held-out-seed regret ({len(multi)} worlds)"]))
    for c in ranked:
        ran = [w for w in basis if w in regret[c]]
        worst = max(ran, key=lambda w: regret[c][w])
        out = [held[c][w] for w in multi if w in held[c]]
        print(sep.join([c, str(len(ran)), f"{mean[c]:.4f}", f"{regret[c][worst]:.3f}",
                        worst, f"{np.mean(out):.4f}" if out else "--"]))
    default = DEFAULT if DEFAULT in mean else ranked[0]
    everywhere = [regret[default][w] for w in hm if w in regret[default]]
    print(f"\n{default}: mean regret {np.mean(everywhere):.4f} over all {len(everywhere)} "
          f"worlds where it ran (the large world against its own, shorter list)\n")
    seeds = {w: len(next(iter(per.values()))) for w, per in _by_seed(rows).items()}
    print(sep.join(["world", "train images", "classes", "D", "best configuration",
                    "best HM", "long schedule HM", "0.1.0 default HM", "previous default HM",
                    "default HM",
                    "default regret", "seeds", "default held-out-seed regret"]))
    for w in hm:
        top = max(hm[w], key=hm[w].get)
        long = max((hm[w].get(c, -1), c) for c in (LONG_LARGE if w in LARGE else LONG))
        first = next(r for r in rows if r["world"] == w)
        print(sep.join([w, f"{first['n_train']:,}", str(first["n_classes"]), str(_dim(w)),
                        top, f"{hm[w][top]:.3f}",
                        f"{long[0]:.3f} ({long[1]})" if long[0] >= 0 else "--",
                        f"{hm[w].get(OLD_DEFAULT, float('nan')):.3f}",
                        f"{hm[w].get(PREVIOUS, float('nan')):.3f}",
                        f"{hm[w].get(default, float('nan')):.3f}",
                        f"{hm[w][top] - hm[w].get(default, float('nan')):.3f}",
                        str(seeds[w]),
                        f"{held[default][w]:.3f}" if w in held[default] else "--"]))


# what the few-shot validation and holdout worlds ran: the defaults, the changes for little
# data they were checked against (more steps, other lr rules) and a few fixed schedules
VALIDATION_CONFIGS = [DEFAULT, PREVIOUS, "auto lr sqrt, e20-cap200",
                      "auto lr floor0.1, e20-cap200", "auto lr floor0.03, e20-cap200",
                      "auto lr, s200", "auto lr, e20-cap200-min100", "reference recipe",
                      "e5-cap400-lr0.0003", "e20-cap200-lr0.0003", "s200-lr3e-4",
                      "e5-cap400-lr0.001", "0.1.0 default (10 epochs, batch 512)"]
OLD_DEFAULT = "0.1.0 default (10 epochs, batch 512)"
LONG = ("s800-lr3e-4", "s800")  # the long schedules of the grid (800 steps)
LONG_LARGE = ("e20-cap1000-lr0.001",)  # 1,000 steps


def _dim(world):
    spec = SPECS[world]
    return 64 if spec is None else spec["dim"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["sweep", "report"])
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="seeds to sweep (default 0 1) or to report (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--worlds", nargs="+", default=list(WORLDS))
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--configs", nargs="+", help="sweep or report only these configurations")
    parser.add_argument("--same-configs", action="store_true",
                        help="sweep every configuration that each world already has (new "
                        "seeds; a large world takes the first seed only)")
    parser.add_argument("--validation", action="store_true",
                        help="report on the validation worlds (kept out of the family)")
    parser.add_argument("--holdout", action="store_true",
                        help="report on the worlds made after the default was chosen")
    args = parser.parse_args()
    if args.same_configs and args.configs:
        parser.error("--same-configs takes each world's configurations from the log; "
                     "leave out --configs")
    if args.command == "sweep":
        sweep(args.seeds or [0, 1], args.jobs, args.worlds,
              None if args.same_configs else args.configs or CANDIDATES)
    else:
        kept_out = args.validation or args.holdout
        report(args.markdown, args.configs or (VALIDATION_CONFIGS if kept_out else CANDIDATES),
               VALIDATION if args.validation else HOLDOUT if args.holdout else WORLDS,
               args.seeds)


if __name__ == "__main__":
    main()
