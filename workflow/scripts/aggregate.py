# Rule aggregate. A script rather than a `crossdisc aggregate` command line: the paths of a grid of
# thousands of runs overflow the 128 KiB that one shell command may hold.
import contextlib
import traceback

from crossdisc.aggregate import aggregate, read_published

# everything printed goes to the job's log, a failure's traceback too (its last line is the error)
with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # noqa: F821
    try:
        inputs = snakemake.input  # noqa: F821
        published = read_published(inputs.published[0]) if inputs.published else None
        outputs = {name: [path] if isinstance(path, str) else list(path) for name, path in snakemake.output.items()}  # noqa: F821
        aggregate(inputs.metrics, outputs, dict(snakemake.params.items()), published, inputs.tokens)  # noqa: F821
    except Exception:
        traceback.print_exc()
        raise
