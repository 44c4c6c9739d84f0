# Fine-tuning: one job per (experiment, task, model, init, token map, data fraction, seed).


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        metrics=f"{PATHS.run}/metrics.json",
        curve=f"{PATHS.run}/curve.parquet",
        predictions=f"{PATHS.run}/predictions.parquet",
    log:
        f"{RESULTS}/logs/finetune/{PATHS.run_id}.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune/{PATHS.run_id}.tsv"
    conda:
        ENV
    threads: config["resources"]["train_threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=grid.train_gpus(),
    params:
        hparams=hparams,
        run=run_coordinates,
        state=PATHS.run_state,
        device=config["device"],
    shell:
        "crossdisc finetune --tokens {input.tokens} --token-map {input.token_map} --model {input.model} "
        "--init {wildcards.init} --hparams {params.hparams:q} --seed {wildcards.seed} "
        "--fraction {wildcards.fraction} --run {params.run:q} --device {params.device} --state {params.state} "
        "--out $(dirname {output.metrics}) > {log} 2>&1"
