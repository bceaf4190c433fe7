# On-policy distillation from a symbolic teacher (src/mgsd/train/distill.py): MGSD stage 2 and
# its ablations. Each method's (initial weights, teacher, plan, loss) is in DISTILL_SETUPS.


rule distill:
    input:
        models=lambda wc: model_inputs(CFG, *DISTILL_SETUPS[wc.method][:2]),
        train=[data_file(CFG, p, "train") for p in CFG.data.puzzles],
        val=[data_file(CFG, p, "val") for p in CFG.data.puzzles],
    output:
        model=directory(f"{ROOT}/models/{{method}}/model"),
        metrics=f"{ROOT}/models/{{method}}/metrics.json",
        log=f"{ROOT}/models/{{method}}/train_log.jsonl",
    wildcard_constraints:
        method="|".join(DISTILL_SETUPS),
    params:
        cfg=lambda wc: section_json(CFG.distill),
        init=lambda wc: model_ref(CFG, DISTILL_SETUPS[wc.method][0]),
        teacher=lambda wc: model_ref(CFG, DISTILL_SETUPS[wc.method][1]),
        plan=lambda wc: "--teacher-sees-plan" if DISTILL_SETUPS[wc.method][2] else "",
        loss=lambda wc: DISTILL_SETUPS[wc.method][3],
        style=CFG.backbone.prompt_style,
        work=lambda wc: f"{ROOT}/resume/{wc.method}",
        launch=lambda wc: launcher(CFG, "distill"),
    log:
        f"{ROOT}/logs/models/{{method}}.log",
    benchmark:
        f"{ROOT}/benchmarks/models/{{method}}.tsv"
    resources:
        **gpu_resources(CFG, "distill"),
    conda:
        "../../envs/mgsd.yaml"
    shell:
        "{params.launch} distill --method {wildcards.method} --init {params.init:q}"
        " --teacher {params.teacher:q} {params.plan} --loss {params.loss}"
        " --train {input.train:q} --val {input.val:q} --config {params.cfg:q}"
        " --prompt-style {params.style} --out {output.model:q} --metrics {output.metrics:q}"
        " --log {params.work:q}/train_log.jsonl --work {params.work:q} > {log:q} 2>&1"
        # as in train.smk: the log survives a failed attempt in the work folder
        " && cp {params.work:q}/train_log.jsonl {output.log:q}"
