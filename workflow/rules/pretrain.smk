# Masked-language-model pre-training: one job per checkpoint, each continuing from the previous.
# It reads the corpus prepared by corpus.smk; the steps of a `source: hub` series are fetched by
# fetch_model (download.smk) instead.


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        protected(directory(CHECKPOINT)) if config["protect_checkpoints"] else directory(CHECKPOINT),
    wildcard_constraints:
        name=alternatives(name for name in config["pretrain"] if not is_fetched(name)),
    params:
        spec=pretrain_spec,
        previous=previous_flag,
        state=f"{STATE}/pretrain/{{name}}/step-{{step}}",
        device=config["device"],
    # the checkpoint chain is the longest path of the DAG: start it before fine-tuning jobs
    priority: 10
    threads: config["resources"]["train_threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=TRAIN_GPUS,
    log:
        f"{RESULTS}/logs/pretrain/{{name}}/step-{{step}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{name}}/step-{{step}}.tsv"
    conda:
        ENV
    shell:
        "crossdisc pretrain --corpus {input.corpus} --tokenizer {input.tokenizer} "
        "--spec {params.spec:q} --step {wildcards.step} {params.previous} --state {params.state} "
        "--device {params.device} --out {output} > {log} 2>&1"
