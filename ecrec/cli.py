"""The ``ecrec`` command line."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ecrec.learning.datasets import DEFAULT_DATA
from ecrec.text.encoder import MODELS, EncoderConfig, default_home


def _prepare(args) -> None:
    from ecrec.text.encoder import resolve_model_dir

    path = resolve_model_dir(EncoderConfig(model=args.model), args.home)
    print(f"{args.model} ready at {path}")


def _demo(args) -> None:
    from ecrec.demo import run_demo

    run_demo(sys.stdout, k=args.k)


def _train_probe(args) -> None:
    from ecrec.text.encoder import TextEncoder
    from ecrec.learning.probe_training import fit_marc_probe
    from ecrec.text.sentiment import probe_path

    enc = TextEncoder(EncoderConfig(model=args.model, max_length=args.max_length), args.home)
    probe, report = fit_marc_probe(enc, args.data, limit=args.limit, test_limit=args.test_limit,
                                   cache_dir=args.home / "cache")
    out = args.out or probe_path(args.model)
    probe.save(out)
    print(json.dumps(report, indent=2))
    print(f"saved {out}")


def _fit_shift(args) -> None:
    import numpy as np

    from ecrec.learning.datasets import load_marc
    from ecrec.text.encoder import TextEncoder, fit_language_shift, language_shift_path
    from ecrec.text.prepare import clean

    enc = TextEncoder(EncoderConfig(model=args.model, align_languages=False), args.home)
    rng = np.random.default_rng(0)
    sample = {}
    for lang in ("zh", "en"):
        texts, _ = load_marc(args.data, lang, "train")
        sample[lang] = [clean(texts[i]).text[:300] for i in rng.choice(len(texts), args.n, replace=False)]
    shift = fit_language_shift(enc, sample["zh"], sample["en"])
    out = language_shift_path(args.model)
    np.savez(out, **shift)
    print(f"saved {out}: |d_query| = {np.linalg.norm(shift['query']):.3f}, "
          f"|d_passage| = {np.linalg.norm(shift['passage']):.3f}")


def _reshard(args) -> None:
    from ecrec.profiles.reshard import reshard

    out = reshard(args.state_dir, args.shards)
    print(json.dumps(out, indent=2))
    if out["backup"]:
        print(f"Serve with num_shards={args.shards}. The old state is in {out['backup']}: delete it once the "
              "service is verified (erasures from now on do not reach it).")


def _eval(args) -> None:
    from ecrec.evaluation.harness import METHODS, EvalOptions, format_table, run_eval

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else METHODS
    opts = EvalOptions(data=args.data, fmt=args.format, split=args.split, methods=methods, out=args.out,
                       plot=args.plot, checkpoint=args.checkpoint, train_time_cap_s=args.time_cap,
                       limit=args.limit, progress=not args.no_progress, home=args.home,
                       trainer=getattr(args, "sequence_trainer", None))  # set where Ray Train is installed
    result = run_eval(opts)
    print(format_table(result))
    if args.out:
        print(f"wrote {args.out} and {args.plot or args.out.with_suffix('.png')}")


def _ablation(args) -> None:
    from ecrec.evaluation.replay import AblationConfig, format_ablation, run_ablation
    from ecrec.recommender import RecommenderConfig, load_analyzer

    cfg = AblationConfig(limit_users=args.limit_users, max_text_chars=args.max_text_chars)
    result = run_ablation(args.data, load_analyzer(RecommenderConfig(), args.home), args.home / "cache", cfg)
    print(format_ablation(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


def _chat_upset(args) -> None:
    """Train the chat's upset probe (escalation after two upset turns) and report held-out figures."""
    import numpy as np

    from ecrec.chat.upset import UpsetDetector, calm_requests, probe_path, train_upset_probe, upset_report, upset_rows
    from ecrec.recommender import RecommenderConfig, load_analyzer

    analyzer = load_analyzer(RecommenderConfig(), args.home)
    fit, held = upset_rows()
    probe = train_upset_probe(analyzer, fit, calm_requests(args.data))
    out = args.out or probe_path("e5-small")
    probe.save(out)
    det = UpsetDetector(probe, probe.info["threshold"])
    analyses = analyzer.analyze([r["text"] for r in held])
    p = np.array([det.probability(a) for a in analyses])
    neg = np.array([a.sentiment.probs["negative"] for a in analyses])
    label_neg = np.array([a.sentiment.label == "negative" for a in analyses], float)
    y = np.array([r["upset"] for r in held])
    lang = np.array([r["lang"] for r in held])
    report = {"probe": upset_report(p, y, det.threshold), "cv_on_fitting_half": probe.info["cv"],
              "by_language": {g: upset_report(p[lang == g], y[lang == g], det.threshold) for g in ("zh", "en")},
              "sentiment_label_negative": upset_report(label_neg, y, 1.0),
              "p_negative_fallback": upset_report(neg, y, UpsetDetector().threshold)}
    print(json.dumps({"saved": str(out), "held_out": report}, indent=1))


def _eval_search(args) -> None:
    """Search quality on Amazon Scientific: lexical vs semantic vs hybrid, personalized vs not."""
    from ecrec.recommender import RecommenderConfig, load_analyzer
    from ecrec.search.evaluation import run_search_eval

    home = args.home
    analyzer = load_analyzer(RecommenderConfig(), home)
    result = run_search_eval(args.data, analyzer, cache_dir=(home or default_home()) / "cache", n_users=args.users)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


def _intent_groups(args) -> None:
    from ecrec.learning.datasets import load_intents
    from ecrec.text.encoder import TextEncoder, encode_cached
    from ecrec.learning.intent_data import GROUPS, paraphrase_groups, save_groups

    texts, names = load_intents(args.data)
    enc = TextEncoder(EncoderConfig(model="e5-small", max_length=64, align_languages=False), args.home)
    x = encode_cached(enc, texts, "query", args.home / "cache", align=False)
    groups = paraphrase_groups(x, names, texts, per_group=args.per_group)
    save_groups(groups, args.data / "intents" / "bitext_20k_utterances.csv", args.out or GROUPS)
    print(f"{len(texts)} utterances in {groups.max() + 1} paraphrase groups -> {args.out or GROUPS}")


def _eval_text(args) -> None:
    from ecrec.text.encoder import TextEncoder
    from ecrec.text.sentiment import head_path, intent_head_path, load_head
    from ecrec.evaluation.text_eval import intent_report, sentiment_report

    enc = TextEncoder(EncoderConfig(model=args.model), args.home)
    path = (head_path if args.task == "sentiment" else intent_head_path)(args.head, args.model)
    head = load_head(path, enc)
    if args.task == "sentiment":
        report = sentiment_report(enc, head, str(args.data), limit=args.limit,
                                  logits_out=args.out.with_suffix(".logits.npz") if args.out else None)
    else:
        report = intent_report(enc, head, str(args.data))
    report["path"] = str(path)
    run = Path(report["path"]).with_name("metrics.json")
    if run.exists():  # a training run's folder: keep what produced the branch next to its figures
        m = json.loads(run.read_text())
        report["training"] = {"config": m["config"], "epochs_run": m["epochs_run"], "fit_wall_s": m["fit_wall_s"]}
    text = json.dumps(report, indent=2, ensure_ascii=False, default=float)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


SEED_REVIEW = "这款手机拍照效果很好，但电池续航不太理想"


def _eval_aspects(args) -> None:
    """Per-file dev figures of an aspect branch through the serving path (the encoder's trunk)."""
    import time

    from ecrec.evaluation.aspect_eval import evaluate_files
    from ecrec.learning.aspect_data import aspect_splits
    from ecrec.text.aspects import AspectAnalyzer
    from ecrec.text.encoder import TextEncoder

    enc = TextEncoder(EncoderConfig(model=args.model), args.home)
    analyzer = AspectAnalyzer.load(enc, args.branch)
    dev = aspect_splits(args.data, args.dev_frac, args.seed)[1]
    t0 = time.perf_counter()
    report = evaluate_files(enc.model, enc.tokenizer, analyzer.branch, dev, analyzer.max_length, enc.device)
    report["eval_s"] = time.perf_counter() - t0
    report["protocol"] = (f"dev = a seeded {args.dev_frac:.0%} of each file's sentences (seed {args.seed}), never "
                          "trained on; polarity over aspect rows with the gold terms given; extraction F1 = the "
                          "set of extracted terms per sentence against the gold set (lower-cased), micro over "
                          "sentences; Chinese binary files: neutral counts as wrong")
    report["branch"] = {k: v for k, v in analyzer.info.items() if k != "dev"}
    report["seed_review"] = {"text": SEED_REVIEW,
                             "aspects": [t.to_dict() for t in analyzer.analyze([SEED_REVIEW], category="phone")[0]]}
    text = json.dumps(report, indent=2, ensure_ascii=False, default=float)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    from ecrec.learning.aspect_training import summary_table

    print(summary_table(report))
    print(json.dumps(report["seed_review"], ensure_ascii=False))


def _drift_reference(args) -> None:
    import random

    from ecrec.learning.datasets import load_marc
    from ecrec.operations.drift import reference_from_texts
    from ecrec.recommender import RecommenderConfig, load_analyzer

    texts = []
    for lang in ("zh", "en"):
        pool, _ = load_marc(args.data, lang, "train")
        texts += random.Random(0).sample(pool, min(args.n, len(pool)))
    ref = reference_from_texts(load_analyzer(RecommenderConfig(), args.home), texts,
                               f"MARC train, {args.n} reviews per language (zh, en)")
    out = args.out or args.home / "drift" / "reference.npz"
    ref.save(out)
    print(f"drift reference: {ref.n} texts, mixes {ref.mixes} -> {out} (serve with drift_reference={out})")


def _drift_plot(args) -> None:
    import os

    import httpx

    from ecrec.operations.drift_history import plot_history

    key = os.environ.get("ECREC_API_KEY")
    r = httpx.get(args.url.rstrip("/") + "/v1/admin/drift/history", timeout=30, trust_env=False,
                  headers={"Authorization": f"Bearer {key}"} if key else {})
    if r.status_code != 200:
        raise SystemExit(f"GET /v1/admin/drift/history: {r.status_code} {r.text[:300]} (an admin key in ECREC_API_KEY?)")
    points = r.json()["points"]
    path = plot_history(points, args.out, title=f"ecrec drift at {args.url}: {len(points)} points")
    print(f"{len(points)} points, {sum(p['alarm'] for p in points)} under alarm -> {path}")


PLUGIN_GROUP = "ecrec.commands"


def _register_plugins(sub) -> None:
    """The sub-commands other installed packages declare in the ``ecrec.commands`` entry-point group
    (this project's Ray shells declare theirs in pyproject.toml). One that cannot import here (Ray
    missing) is left out: its commands are simply not offered."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            register = ep.load()
        except ImportError as e:
            logging.getLogger(__name__).debug("commands of %s not offered: %s", ep.value, e)
            continue
        register(sub)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ecrec", description=__doc__)
    parser.add_argument("--home", type=Path, default=None,
                        help="models and caches (default $ECREC_HOME, else the checkout's .ecrec that make built, "
                             "else ~/.cache/ecrec)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("prepare", help="build and verify the encoder model folder")
    p.add_argument("--model", choices=MODELS, default="e5-small")
    p.set_defaults(fn=_prepare)

    p = sub.add_parser("demo", help="in-process demo on the demo catalog")
    p.add_argument("-k", type=int, default=6)
    p.set_defaults(fn=_demo)

    p = sub.add_parser("train-probe", help="fit the MARC sentiment probe and report test figures")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", choices=MODELS, default="e5-small")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="train examples per language")
    p.add_argument("--test-limit", type=int, default=None, help="test examples per language")
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(fn=_train_probe)

    p = sub.add_parser("fit-language-shift", help="estimate the zh/en centering shift from MARC train texts")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", choices=MODELS, default="e5-small")
    p.add_argument("-n", type=int, default=600, help="texts per language")
    p.set_defaults(fn=_fit_shift)

    p = sub.add_parser("reshard", help="move profiles to another shard count (service stopped)")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--shards", type=int, required=True)
    p.set_defaults(fn=_reshard)

    p = sub.add_parser("eval", help="recommendation quality on a dataset: every method, full ranking, one table")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "recsys" / "amazon_scientific",
                   help="a UniSRec folder (*.item2index, *.text, *.{train,valid,test}.inter) or RecBole atomic files")
    p.add_argument("--format", default="auto", choices=["auto", "unisrec", "recbole"])
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--methods", default=None, help="comma-separated: popularity,itemknn,zeroshot,live,sequence (default all)")
    p.add_argument("--out", type=Path, default=None, help="JSON results (a PNG of Recall@K next to it)")
    p.add_argument("--plot", type=Path, default=None, help="PNG path (default: --out with .png)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="sequence model; trained here when missing, with Ray Train where it is installed "
                        "(default runs/sequence/<dataset>-<items>/)")
    p.add_argument("--time-cap", type=float, default=900.0, help="seconds for training a missing sequence model")
    p.add_argument("--limit", type=int, default=None, help="first N users only")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=_eval)

    p = sub.add_parser("ablation", help="what text and sentiment add: Musical Instruments reviews replayed live")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--limit-users", type=int, default=None)
    p.add_argument("--max-text-chars", type=int, default=400)
    p.add_argument("--out", type=Path, default=None, help="JSON results")
    p.set_defaults(fn=_ablation)

    p = sub.add_parser("intent-groups", help="paraphrase groups of the Bitext intents (the held-out split)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--per-group", type=int, default=20, help="utterances per k-means group, per intent")
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(fn=_intent_groups)

    p = sub.add_parser("eval-search", help="search quality on Amazon Scientific (lexical, semantic, hybrid, personal)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--users", type=int, default=1500, help="test users for the personalized figures")
    p.add_argument("--out", type=Path, default=None, help="JSON report")
    p.set_defaults(fn=_eval_search)

    p = sub.add_parser("chat-upset", help="train the chat's upset probe (escalation) and report held-out figures")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=None)
    p.set_defaults(fn=_chat_upset)

    p = sub.add_parser("eval-text", help="sentiment or intent quality of a head, through the serving path")
    p.add_argument("task", choices=["sentiment", "intent"])
    p.add_argument("--head", default=None, help="a branch .safetensors (default: the shipped one)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", choices=MODELS, default="e5-small")
    p.add_argument("--limit", type=int, default=None, help="texts per test set (sentiment)")
    p.add_argument("--out", type=Path, default=None, help="JSON report")
    p.set_defaults(fn=_eval_text)

    p = sub.add_parser("eval-aspects", help="aspect extraction and polarity per file, on the dev splits")
    p.add_argument("--branch", default=None, help="an aspect branch .safetensors (default: the shipped one)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", choices=MODELS, default="e5-small")
    p.add_argument("--dev-frac", type=float, default=0.15, help="as the branch was trained with")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="JSON report (docs/eval/aspects.json)")
    p.set_defaults(fn=_eval_aspects)

    p = sub.add_parser("drift-reference", help="fit the drift monitor's reference on MARC train reviews (zh + en)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("-n", type=int, default=500, help="reviews per language")
    p.add_argument("--out", type=Path, default=None, help="default $ECREC_HOME/drift/reference.npz")
    p.set_defaults(fn=_drift_reference)

    p = sub.add_parser("drift-plot", help="plot the running graph's drift scores over the last day (PNG)")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the ecrec endpoint (admin key: ECREC_API_KEY)")
    p.add_argument("--out", type=Path, default=Path("drift.png"))
    p.set_defaults(fn=_drift_plot)

    _register_plugins(sub)
    args = parser.parse_args(argv)
    args.home = args.home or default_home()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.fn(args)


if __name__ == "__main__":
    main()
