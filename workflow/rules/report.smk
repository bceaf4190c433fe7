# Tables, figures and the HTML report: functions of the evaluation records and training logs only.


rule tables:
    """The paper's tables (csv, md, tex) from the evaluation records and training logs."""
    input:
        records=eval_files(CFG),
        premise=premise_outputs(CFG),
        logs=train_logs(CFG, every_run=True),
    output:
        [
            report(f, category="Tables", caption="../report/tables.rst")
            for f in report_files(CFG)
            if "/tables/" in f
        ],
        f"{ROOT}/tables/{REPORT_CONFIGS['tables']}",
    log:
        f"{ROOT}/logs/report/tables.log",
    benchmark:
        f"{ROOT}/benchmarks/report/tables.tsv"
    conda:
        "../../envs/mgsd.yaml"
    resources:
        **cpu_resources(CFG, "report"),
    params:
        cfg=lambda wc: section_json(CFG.tables),
        out=lambda wc, output: os.path.dirname(output[0]),
    shell:
        "mgsd tables --records {input.records:q} --premise {input.premise:q}"
        " --train-logs {input.logs:q}"
        " --config {params.cfg:q} --out {params.out:q}"
        " > {log:q} 2>&1"


rule plots:
    """The figures from the evaluation records and training logs."""
    input:
        records=eval_files(CFG),
        logs=train_logs(CFG),
    output:
        [
            report(f, category="Figures", caption="../report/figures.rst")
            for f in report_files(CFG)
            if "/figures/" in f
        ],
        f"{ROOT}/figures/{REPORT_CONFIGS['figures']}",
    log:
        f"{ROOT}/logs/report/plots.log",
    benchmark:
        f"{ROOT}/benchmarks/report/plots.tsv"
    conda:
        "../../envs/mgsd.yaml"
    resources:
        **cpu_resources(CFG, "report"),
    params:
        cfg=lambda wc: section_json(CFG.plots),
        out=lambda wc, output: os.path.dirname(output[0]),
    shell:
        "mgsd plots --records {input.records:q} --train-logs {input.logs:q}"
        " --config {params.cfg:q} --out {params.out:q} > {log:q} 2>&1"
