# Pre-training corpora: a source's corpus.txt tokenised once per vocabulary, duplicates dropped.


rule prepare_corpus:
    input:
        unpack(corpus_inputs),
    output:
        PATHS.corpus,
    log:
        f"{RESULTS}/logs/corpus/{{source}}/{{vocab}}.log",
    # it opens the pre-training chain, the DAG's longest path (see pretrain.smk)
    priority: 10
    conda:
        ENV
    shell:
        "crossdisc prepare-corpus --corpus {input.raw}/corpus.txt --tokenizer {input.tokenizer} "
        "--out {output} > {log} 2>&1"
