# Raw sources to token files, one Parquet schema for every discipline.


rule preprocess:
    input:
        unpack(preprocess_inputs),
    output:
        TOKENS,
    params:
        spec=task_spec,
        tokenizer=tokenizer_flag,
    log:
        f"{RESULTS}/logs/preprocess/{{task}}/{{vocab}}.log",
    conda:
        ENV
    shell:
        "crossdisc preprocess --task {wildcards.task} --spec {params.spec:q} --raw {input.raw} "
        "{params.tokenizer} --out {output} > {log} 2>&1"
