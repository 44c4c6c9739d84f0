# Every run's metrics into the results table and figures of the report.


rule aggregate:
    input:
        metrics=run_outputs("metrics.json"),
        curves=run_outputs("curve.parquet"),
    output:
        table_md=report(f"{RESULTS}/tables/results.md", caption="../report/results_table.rst", category="Results"),
        table_csv=report(f"{RESULTS}/tables/results.csv", caption="../report/results_table.rst", category="Results"),
        loss_png=report(f"{RESULTS}/figures/loss_curves.png", caption="../report/loss_curves.rst", category="Figures"),
        loss_svg=f"{RESULTS}/figures/loss_curves.svg",
        steps=[
            report(f"{RESULTS}/figures/pretrain_steps.png", caption="../report/pretrain_steps.rst", category="Figures"),
            f"{RESULTS}/figures/pretrain_steps.svg",
        ]
        if has_pretrain_runs()
        else [],
        paper=[
            report(f"{RESULTS}/tables/paper.md", caption="../report/paper_tables.rst", category="Results"),
            report(f"{RESULTS}/tables/paper.csv", caption="../report/paper_tables.rst", category="Results"),
            f"{RESULTS}/tables/paper.tex",
        ]
        if config["paper_rows"]
        else [],
    params:
        steps_figure=steps_figure_flag,
        paper=paper_tables_flag,
    log:
        f"{RESULTS}/logs/aggregate.log",
    conda:
        ENV
    shell:
        "crossdisc aggregate --metrics {input.metrics} --table {output.table_md} {output.table_csv} "
        "--loss-figure {output.loss_png} {output.loss_svg} {params.steps_figure} {params.paper} > {log} 2>&1"
