# Rule aggregate. A script rather than a `crossdisc aggregate` command line: the paths of a grid of
# thousands of runs overflow the 128 KiB that one shell command may hold.
import contextlib
import traceback

from crossdisc.aggregate import aggregate, read_published

# everything printed goes to the job's log, a failure's traceback too (its last line is the error)
with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # noqa: F821
    try:
        inputs, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
        published = read_published(inputs.published[0]) if inputs.published else None
        aggregate(inputs.metrics, out.tables, out.loss_figure, out.steps_figure, params.paper_rows,
                  out.paper_tables, params.paper_figures, out.paper_figures, params.missing, published,
                  params.comparisons, out.comparisons, params.searches, out.search_tables, out.search_figures,
                  out.headline_figure, params.headline, out.overview)
    except Exception:
        traceback.print_exc()
        raise
