# Evaluation (src/mgsd/eval/evaluate.py): one job per method loads its model once and writes one
# records file per (puzzle, input condition), with a metrics JSON beside each.


rule evaluate:
    """One model on every puzzle's test set, under every input condition: records and metrics."""
    input:
        model=lambda wc: model_inputs(CFG, wc.method),
        data=[data_file(CFG, p, "test") for p in CFG.data.puzzles],
    output:
        records=eval_outputs(CFG, "{method}", ".parquet"),
        metrics=eval_outputs(CFG, "{method}", ".json"),
    log:
        f"{ROOT}/logs/eval/{{method}}.log",
    benchmark:
        f"{ROOT}/benchmarks/eval/{{method}}.tsv"
    wildcard_constraints:
        method=one_of(evaluated_models(CFG)),
    conda:
        "../../envs/mgsd.yaml"
    resources:
        **gpu_resources(CFG, "evaluate"),
    params:
        cfg=lambda wc: section_json(CFG.evaluate),
        model=lambda wc: model_ref(CFG, wc.method),
        method=lambda wc: split_replicate(wc.method)[0],
        replicate=lambda wc: split_replicate(wc.method)[1],
        style=CFG.backbone.prompt_style,
        out=lambda wc, output: os.path.dirname(os.path.dirname(output.records[0])),
    shell:
        "mgsd evaluate --model {params.model:q} --method {params.method}"
        " --replicate {params.replicate}"
        " --data {input.data:q} --config {params.cfg:q}"
        " --prompt-style {params.style} --out-dir {params.out:q} > {log:q} 2>&1"


# External models (config external_models): evaluated as given, one job per model and input
# condition, with the GPU resources of `evaluate`. A job reads only its model's path and prompt
# style and the evaluate section, so changing one external model reruns its jobs and the reports.
rule evaluate_external:
    """One external model (config external_models) x one input condition on the test sets."""

    input:
        model=lambda wc: external_inputs(CFG, wc.external),
        data=[data_file(CFG, p, "test") for p in CFG.data.puzzles],
    output:
        records=external_outputs(CFG, "{external}", "{condition}", ".parquet"),
        metrics=external_outputs(CFG, "{external}", "{condition}", ".json"),
    log:
        f"{ROOT}/logs/eval/external/{{external}}/{{condition}}.log",
    benchmark:
        f"{ROOT}/benchmarks/eval/external/{{external}}/{{condition}}.tsv"
    wildcard_constraints:
        external=one_of(CFG.external_models),
        condition=one_of(CONDITIONS),
    conda:
        "../../envs/mgsd.yaml"
    resources:
        **gpu_resources(CFG, "evaluate"),
    params:
        cfg=lambda wc: section_json(CFG.evaluate),
        model=lambda wc: CFG.external_models[wc.external].path,
        style=lambda wc: CFG.external_models[wc.external].prompt_style,
        out=lambda wc, output: os.path.dirname(os.path.dirname(output.records[0])),
    shell:
        "mgsd evaluate --model {params.model:q} --method {wildcards.external} --external"
        " --data {input.data:q} --conditions {wildcards.condition} --config {params.cfg:q}"
        " --prompt-style {params.style} --out-dir {params.out:q} > {log:q} 2>&1"


# The premise of the experiment (README, "the premise"): the base model on the validation split
# under every input condition and under the teacher's prompt, before any method. Its records feed
# tables/premise; `snakemake premise` runs it alone.
rule premise_eval:
    """The base model on the validation split under every condition: tables/premise."""
    input:
        model=model_inputs(CFG, "base"),
        data=[data_file(CFG, p, "val") for p in CFG.data.puzzles],
    output:
        records=premise_outputs(CFG, ".parquet"),
        metrics=premise_outputs(CFG, ".json"),
    log:
        f"{ROOT}/logs/eval/premise.log",
    benchmark:
        f"{ROOT}/benchmarks/eval/premise.tsv"
    conda:
        "../../envs/mgsd.yaml"
    resources:
        **gpu_resources(CFG, "evaluate"),
    params:
        cfg=section_json(CFG.evaluate),
        model=lambda wc: model_ref(CFG, "base"),
        conditions=" ".join(PREMISE_CONDITIONS),
        style=CFG.backbone.prompt_style,
        out=lambda wc, output: os.path.dirname(os.path.dirname(output.records[0])),
    shell:
        "mgsd evaluate --model {params.model:q} --method base"
        " --data {input.data:q} --conditions {params.conditions} --config {params.cfg:q}"
        " --prompt-style {params.style} --out-dir {params.out:q} > {log:q} 2>&1"
