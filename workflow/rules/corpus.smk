# Pre-training corpora, per source and vocabulary: corpus.txt split by document into shards (one
# streaming pass), each shard tokenised with its duplicates dropped (the shard jobs run in
# parallel), and a manifest of the shards, which pre-training and most-frequent token maps read.
# All three open the pre-training chain, the DAG's longest path (see pretrain.smk): priority 10.


rule split_corpus:
    input:
        unpack(corpus_split_inputs),
    output:
        # a copy of corpus.txt, each shard gone once it is tokenised
        temp(expand(PATHS.corpus_text_shard, shard=grid.corpus_shards(), allow_missing=True)),
    log:
        f"{RESULTS}/logs/corpus/{{source}}/{{vocab}}/split.log",
    priority: 10
    conda:
        ENV
    shell:
        "crossdisc split-corpus --corpus {input.raw}/corpus.txt --out {output} > {log} 2>&1"


rule prepare_corpus:
    input:
        unpack(corpus_shard_inputs),
    output:
        PATHS.corpus_shard,
    log:
        f"{RESULTS}/logs/corpus/{{source}}/{{vocab}}/shard-{{shard}}.log",
    priority: 10
    conda:
        ENV
    shell:
        "crossdisc prepare-corpus --text {input.text} --tokenizer {input.tokenizer} --out {output} > {log} 2>&1"


rule gather_corpus:
    input:
        shards=corpus_shards_of,
    output:
        PATHS.corpus,
    log:
        f"{RESULTS}/logs/corpus/{{source}}/{{vocab}}.log",
    priority: 10
    conda:
        ENV
    shell:
        "crossdisc gather-corpus --shards {input.shards} --out {output} > {log} 2>&1"
