# Raw sources to token files, one Parquet schema for every discipline.


rule preprocess:
    input:
        unpack(preprocess_inputs),
    output:
        PATHS.tokens,
    log:
        f"{RESULTS}/logs/preprocess/{{task}}/{{vocab}}.log",
    conda:
        ENV
    params:
        spec=task_spec,
        tokenizer=optional_flag("tokenizer"),
    shell:
        "crossdisc preprocess --task {wildcards.task} --spec {params.spec:q} --raw {input.raw} "
        "{params.tokenizer} --out {output} > {log} 2>&1"
