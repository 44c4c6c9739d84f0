# Token maps: the auditable lookup table from a task's ids to a model vocabulary's ids.


rule token_map:
    input:
        unpack(token_map_inputs),
    output:
        PATHS.token_map,
    log:
        f"{RESULTS}/logs/token_maps/{{token_map}}/{{task}}/{{vocab}}.log",
    conda:
        ENV
    params:
        seed=table_seed,
        tokenizer=optional_flag("tokenizer"),
        corpus=optional_flag("corpus"),
    shell:
        "crossdisc token-map --strategy {wildcards.token_map} --tokens {input.tokens} "
        "{params.tokenizer} {params.corpus} --seed {params.seed} --out {output} > {log} 2>&1"


# A random table drawn from each run's seed (token_maps.seed: run).
use rule token_map as run_seeded_token_map with:
    output:
        PATHS.run_seeded_token_map,
    log:
        f"{RESULTS}/logs/token_maps/{{token_map}}/{{task}}/{{vocab}}/seed-{{seed}}.log",
