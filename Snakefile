# crossdisc: "Is BERT a Cross-Disciplinary Knowledge Learner?" (Kao & Lee, 2021), reproduced and
# extended. This file loads the config and names the targets; each stage lives in workflow/rules/.

import os

from snakemake.utils import min_version

min_version("9.0")

# envs/crossdisc.yaml (--sdm conda) installs the pipeline's package from here
os.environ["CROSSDISC_ROOT"] = workflow.basedir


envvars:
    "CROSSDISC_ROOT",


# A --configfile is a whole configuration: the embedded default is loaded only when none is given
# (`workflow.overwrite_configfiles` holds the --configfile paths), so a user's config is never
# merged with the default experiments. tests/test_project.py checks it.
if not workflow.overwrite_configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"


include: "workflow/rules/common.smk"


# The report opens on the numbers: the aggregation's overview (results table, paired comparisons)
# once it exists, before that a description.
OVERVIEW = os.path.abspath(f"{PATHS.tables}/overview.rst")


report: OVERVIEW if os.path.exists(OVERVIEW) else "workflow/report/workflow.rst"


wildcard_constraints:
    **grid.wildcard_constraints(),


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
    download,
    fetch_model,
    aggregate,


rule all:
    default_target: True
    input:
        rules.aggregate.output,


# A finished run ends on where its results are and its first comparisons; a failed one on each
# failed step's one-line error (from its log).
onsuccess:
    print(*summary_lines(RESULTS, f"{RESULTS}/logs"), sep="\n", file=sys.stderr)


onerror:
    report_at_exit(log)
