# Rule aggregate. A script rather than a `crossdisc aggregate` command line: the paths of a grid of
# thousands of runs overflow the 128 KiB that one shell command may hold.
import sys

from crossdisc.aggregate import aggregate

with open(snakemake.log[0], "w") as log:  # noqa: F821 (Snakemake defines `snakemake`)
    sys.stdout = sys.stderr = log
    out, params = snakemake.output, snakemake.params  # noqa: F821
    aggregate(snakemake.input.metrics, out.tables, out.loss_figure, out.steps_figure, params.paper_rows,  # noqa: F821
              out.paper_tables, params.paper_figures, out.paper_figures, params.missing)
