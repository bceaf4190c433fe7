# Supervised stages (src/mgsd/train/sft.py): the scratch backbone's symbolic pretraining (its
# output is the "base" model), grounding (MGSD stage 1) and the direct-SFT baseline.


rule scratch_init:
    output:
        directory(f"{ROOT}/models/scratch/model"),
    params:
        cfg=lambda wc: section_json(CFG.backbone.scratch),
        image_size=CFG.data.image_size,
    log:
        f"{ROOT}/logs/models/scratch_init.log",
    benchmark:
        f"{ROOT}/benchmarks/models/scratch_init.tsv"
    resources:
        **cpu_resources(CFG, "symbolic_pretrain"),
    conda:
        "../../envs/mgsd.yaml"
    shell:
        "mgsd build-scratch --config {params.cfg:q} --image-size {params.image_size}"
        " --out {output:q} > {log:q} 2>&1"


rule symbolic_pretrain:
    input:
        init=f"{ROOT}/models/scratch/model",
        train=[data_file(CFG, p, "train") for p in CFG.data.puzzles],
        val=[data_file(CFG, p, "val") for p in CFG.data.puzzles],
    output:
        model=directory(f"{ROOT}/models/base/model"),
        metrics=f"{ROOT}/models/base/metrics.json",
        log=f"{ROOT}/models/base/train_log.jsonl",
    params:
        cfg=lambda wc: section_json(CFG.symbolic_pretrain),
        style=CFG.backbone.prompt_style,
        work=f"{ROOT}/work/base",
        launch=lambda wc: launcher(CFG, "symbolic_pretrain"),
    log:
        f"{ROOT}/logs/models/base.log",
    benchmark:
        f"{ROOT}/benchmarks/models/base.tsv"
    resources:
        **gpu_resources(CFG, "symbolic_pretrain"),
    conda:
        "../../envs/mgsd.yaml"
    shell:
        "{params.launch} train-sft --stage symbolic_pretrain --init {input.init:q}"
        " --train {input.train:q} --val {input.val:q} --config {params.cfg:q}"
        " --prompt-style {params.style} --out {output.model:q} --metrics {output.metrics:q}"
        " --log {output.log:q} --work {params.work:q} > {log:q} 2>&1"


rule sft_stage:
    input:
        init=lambda wc: model_inputs(CFG, "base"),
        train=[data_file(CFG, p, "train") for p in CFG.data.puzzles],
        val=[data_file(CFG, p, "val") for p in CFG.data.puzzles],
    output:
        model=directory(f"{ROOT}/models/{{stage}}/model"),
        metrics=f"{ROOT}/models/{{stage}}/metrics.json",
        log=f"{ROOT}/models/{{stage}}/train_log.jsonl",
    wildcard_constraints:
        stage="grounding|sft_direct",
    params:
        cfg=lambda wc: section_json(getattr(CFG, wc.stage)),
        init=lambda wc: model_ref(CFG, "base"),
        style=CFG.backbone.prompt_style,
        work=lambda wc: f"{ROOT}/work/{wc.stage}",
        launch=lambda wc: launcher(CFG, wc.stage),
    log:
        f"{ROOT}/logs/models/{{stage}}.log",
    benchmark:
        f"{ROOT}/benchmarks/models/{{stage}}.tsv"
    resources:
        **gpu_resources(CFG, "grounding"),
    conda:
        "../../envs/mgsd.yaml"
    shell:
        "{params.launch} train-sft --stage {wildcards.stage} --init {params.init:q}"
        " --train {input.train:q} --val {input.val:q} --config {params.cfg:q}"
        " --prompt-style {params.style} --out {output.model:q} --metrics {output.metrics:q}"
        " --log {output.log:q} --work {params.work:q} > {log:q} 2>&1"
