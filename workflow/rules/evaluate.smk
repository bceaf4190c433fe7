# Evaluation (src/mgsd/eval/evaluate.py): one job per method loads its model once and writes one
# records file per (puzzle, input condition), with a metrics JSON beside each.


rule evaluate:
    input:
        model=lambda wc: model_inputs(CFG, wc.method),
        data=[data_file(CFG, p, "test") for p in CFG.data.puzzles],
    output:
        records=eval_outputs(CFG, "{method}", ".parquet"),
        metrics=eval_outputs(CFG, "{method}", ".json"),
    params:
        cfg=lambda wc: section_json(CFG.evaluate),
        model=lambda wc: model_ref(CFG, wc.method),
        conditions=" ".join(CFG.evaluate.conditions),
        style=CFG.backbone.prompt_style,
        out=lambda wc, output: os.path.dirname(os.path.dirname(output.records[0])),
    log:
        f"{ROOT}/logs/eval/{{method}}.log",
    benchmark:
        f"{ROOT}/benchmarks/eval/{{method}}.tsv"
    resources:
        **gpu_resources(CFG, "evaluate"),
    conda:
        "../../envs/mgsd.yaml"
    shell:
        "mgsd evaluate --model {params.model:q} --method {wildcards.method}"
        " --data {input.data:q} --conditions {params.conditions} --config {params.cfg:q}"
        " --prompt-style {params.style} --out-dir {params.out:q} > {log:q} 2>&1"
