# BERT pre-training (masked LM + next-sentence prediction): one job per checkpoint, each continuing
# from the previous. It reads the corpus prepared by corpus.smk; the steps of a `source: hub` series
# are fetched by fetch_model (download.smk) instead.


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        protected(directory(PATHS.checkpoint)) if config["protect_checkpoints"] else directory(PATHS.checkpoint),
    log:
        f"{RESULTS}/logs/pretrain/{{name}}/step-{{step}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{name}}/step-{{step}}.tsv"
    wildcard_constraints:
        name=alternatives(grid.trained_series()),
    # the checkpoint chain is the longest path of the DAG: start it before fine-tuning jobs
    priority: 10
    conda:
        ENV
    threads: pretrain_threads
    # A series' gpus and nodes: the job's GPUs, its tasks on SLURM and the command that starts its
    # processes (launcher and batch_workers: resources, not params, since a changed param reruns
    # finished checkpoints)
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=pretrain_resource("gpu"),
        nodes=pretrain_resource("nodes"),
        tasks=pretrain_resource("tasks"),
        tasks_per_gpu=pretrain_resource("tasks_per_gpu"),
        gres=pretrain_resource("gres"),
        mpi=pretrain_resource("mpi"),
        launcher=pretrain_launcher,
        batch_workers=config["resources"]["batch_workers"],
    params:
        spec=pretrain_spec,
        previous=optional_flag("previous"),
        state=PATHS.pretrain_state,
        device=config["device"],
    shell:
        "{resources.launcher} pretrain --corpus {input.corpus} --tokenizer {input.tokenizer} "
        "--spec {params.spec:q} --step {wildcards.step} {params.previous} --state {params.state} "
        "--device {params.device} --batch-workers {resources.batch_workers} --out {output} > {log} 2>&1"
