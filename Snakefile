# crossdisc: "Is BERT a Cross-Disciplinary Knowledge Learner?" (Kao & Lee, 2021), reproduced and
# extended. This file loads the config and names the targets; each stage lives in workflow/rules/.

from snakemake.utils import min_version

min_version("9.0")


# A --configfile is a whole configuration: the embedded default is loaded only when none is given,
# so a user's config is never merged with the default experiments.
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    source=alternatives(config["sources"]),
    model=alternatives({job["model"] for job in runs()} | set(config["models"]) | set(fetched_checkpoints())),
    name=alternatives(config["pretrain"]),
    step=r"\d+",
    task=alternatives(config["tasks"]),
    experiment=alternatives(config["experiments"]),
    init=r"[a-z+-]+",
    fraction=r"[0-9.]+",
    seed=r"\d+",


include: "workflow/rules/download.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/token_map.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/aggregate.smk"


# On a cluster these run where Snakemake runs, unqueued: downloads, since compute nodes often have
# no internet, and the seconds of tables and plots over every run.
localrules:
    download_source,
    fetch_model,
    aggregate,


rule all:
    default_target: True
    input:
        final_outputs(),
