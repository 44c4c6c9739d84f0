# Every run's metrics into the results table, the paper's tables and the figures of the report.


rule aggregate:
    input:
        # each run's metrics.json stands for its outputs (curve.parquet beside it comes from the
        # same job): declaring one file per run instead of two saves planning time in a large grid
        metrics=aggregated_metrics,
        # the paper's numbers: a correction to one re-aggregates
        published=[str(PUBLISHED)] if config["paper_rows"] else [],
        # their metadata counts each task's examples per split and label
        tokens=aggregated_token_files,
    output:
        tables=[
            report(f"{PATHS.tables}/results.md", caption="../report/results_table.rst", category="Results"),
            report(f"{PATHS.tables}/results.csv", caption="../report/results_table.rst", category="Results"),
            report(f"{PATHS.tables}/results.html", caption="../report/results_table.rst", category="Results"),
        ],
        data_tables=results_table_files("data", "data_table"),
        runtime_tables=results_table_files("runtimes", "runtime_table"),
        paper_tables=paper_table_files(),
        comparisons=comparison_table_files(),
        search_tables=search_table_files(),
        search_figures=search_figure_files(),
        headline_figure=figure_files("headline", "headline", category="Results"),
        # the report's landing page (the Snakefile's `report:` once it exists)
        overview=f"{PATHS.tables}/overview.rst",
        loss_figure=overview_figure_files("loss"),
        steps_figure=overview_figure_files("steps"),
        paper_figures=paper_figure_files(),
    log:
        f"{RESULTS}/logs/aggregate.log",
    conda:
        ENV
    params:
        paper_rows=config["paper_rows"],
        paper_figures=config["paper_figures"],
        comparisons=config["comparisons"],
        searches=grid.searches(),
        # read from every run's metrics: a changed headline metric re-aggregates, nothing retrains
        headline=grid.headline_metrics(),
        missing=missing_runs,
    script:
        "../scripts/aggregate.py"
