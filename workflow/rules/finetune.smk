# Fine-tuning: one job per (experiment, task, model, init, token map, data fraction, seed).


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        metrics=f"{RUN}/metrics.json",
        curve=f"{RUN}/curve.parquet",
        predictions=f"{RUN}/predictions.parquet",
    params:
        hparams=hparams,
        state=state_dir,
        device=config["device"],
    threads: config["resources"]["train_threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=TRAIN_GPUS,
    log:
        f"{RESULTS}/logs/finetune/{RUN_ID}.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune/{RUN_ID}.tsv"
    conda:
        ENV
    shell:
        "crossdisc finetune --tokens {input.tokens} --token-map {input.token_map} --model {input.model} "
        "--init {wildcards.init} --hparams {params.hparams:q} --seed {wildcards.seed} "
        "--fraction {wildcards.fraction} --device {params.device} --state {params.state} "
        "--out $(dirname {output.metrics}) > {log} 2>&1"
