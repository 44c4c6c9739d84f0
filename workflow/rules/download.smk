# Raw data sources and off-the-shelf models, fetched or located once, verified by sha256.


# A user-supplied (file://) file that is missing stops a run before any job starts, with one line
# naming the config key; a dry run prints the same line as a warning and still plans.
if workflow.is_main_process:
    for problem in missing_local_files(
        config["sources"], {s for s in grid.sources_in_grid() if not os.path.exists(PATHS.raw.format(source=s))}
    ):
        print(f"crossdisc: warning: {problem}", file=sys.stderr)


onstart:
    downloads = {job.wildcards.source for job in workflow.dag.needrun_jobs() if job.rule.name == "download"}
    if problems := missing_local_files(config["sources"], downloads):
        print(*(f"crossdisc: {problem}" for problem in problems), sep="\n", file=sys.stderr)
        sys.exit(1)


rule download:
    input:
        # a user's own files: editing one reruns its source and everything built from it
        local_source_files,
    output:
        directory(PATHS.raw),
    log:
        f"{RESULTS}/logs/download/{{source}}.log",
    conda:
        ENV
    params:
        spec=source_spec,
        # sha256 of files the config gives none for, recorded on first download, enforced later
        lock=PATHS.checksum_lock,
    shell:
        "crossdisc download --spec {params.spec:q} --out {output} --checksum-lock {params.lock} > {log} 2>&1"


rule fetch_model:
    output:
        directory(PATHS.model),
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    conda:
        ENV
    params:
        spec=model_spec,
    shell:
        "crossdisc fetch-model --spec {params.spec:q} --out {output} > {log} 2>&1"
