# Raw data sources and off-the-shelf models, fetched or located once, verified by sha256.


rule download_source:
    output:
        directory(RAW),
    params:
        spec=source_spec,
        # sha256 of files the config gives none for, recorded on first download, enforced later
        lock=f"{RESULTS}/raw/checksums.lock",
    log:
        f"{RESULTS}/logs/download/{{source}}.log",
    conda:
        ENV
    shell:
        "crossdisc source --spec {params.spec:q} --out {output} --checksum-lock {params.lock} > {log} 2>&1"


rule fetch_model:
    output:
        directory(MODEL),
    params:
        spec=model_spec,
    log:
        f"{RESULTS}/logs/models/{{model}}.log",
    conda:
        ENV
    shell:
        "crossdisc fetch-model --spec {params.spec:q} --out {output} > {log} 2>&1"
